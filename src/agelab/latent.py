"""Latent priors (paper 2): uniform on the unit sphere, or unit Gaussian in R^M."""

from __future__ import annotations

import torch
from torch import Tensor


class Prior:
    """A latent prior: ``sample`` draws codes, ``project`` maps raw encoder outputs onto its support."""

    name = "prior"

    def __init__(self, dim: int):
        self.dim = dim

    def sample(self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def project(self, h: Tensor) -> Tensor:
        raise NotImplementedError

    # Nearest-neighbour divergences use the intrinsic dimension of the support.
    @property
    def intrinsic_dim(self) -> int:
        return self.dim


class SpherePrior(Prior):
    """Uniform distribution on the unit sphere S^{M-1} in R^M (the paper's choice).

    Sampled as u / ||u|| with u ~ N(0, I): the pushforward of a standard Gaussian
    under normalisation is exactly uniform on the sphere.
    """

    name = "sphere"

    def sample(self, n, device="cpu", generator=None):
        u = torch.randn(n, self.dim, device=device, generator=generator)  # (n, M)
        return self.project(u)

    def project(self, h):
        return h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (B, M), unit norm

    @property
    def intrinsic_dim(self):
        return self.dim - 1


class GaussianPrior(Prior):
    """Unit Gaussian N(0, I) in R^M; encoder outputs are used as they are."""

    name = "gaussian"

    def sample(self, n, device="cpu", generator=None):
        return torch.randn(n, self.dim, device=device, generator=generator)

    def project(self, h):
        return h


def make_prior(name: str, dim: int) -> Prior:
    priors = {"sphere": SpherePrior, "gaussian": GaussianPrior}
    if name not in priors:
        raise ValueError(f"unknown prior {name!r}; choose one of {', '.join(priors)}")
    return priors[name](dim)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` (both (B, M)) at fractions ``t`` (T,).

    Returns (B, T, M). Interpolates the direction along the great circle and the
    norm linearly, so unit codes stay on the sphere and Gaussian codes keep a
    plausible norm. Falls back to linear interpolation for (anti)parallel pairs.
    """
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)  # (B, 1)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    cos = (ua * ub).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)  # (B, 1)
    omega = torch.acos(cos)  # (B, 1)
    t = t.to(a).view(1, -1, 1)  # (1, T, 1)
    so = torch.sin(omega).unsqueeze(1)  # (B, 1, 1)
    om = omega.unsqueeze(1)
    wa = torch.sin((1 - t) * om) / so
    wb = torch.sin(t * om) / so
    direction = wa * ua.unsqueeze(1) + wb * ub.unsqueeze(1)  # (B, T, M)
    norm = (1 - t) * na.unsqueeze(1) + t * nb.unsqueeze(1)  # (B, T, 1)
    return direction * norm
