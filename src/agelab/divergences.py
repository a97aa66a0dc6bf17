"""Divergences between a batch of latent codes and the prior (paper 2.1, 3.1).

The AGE game only needs Delta(Q || prior) for the empirical distribution Q of a
batch of codes. All functions take codes ``z`` of shape (B, M) and return a
scalar tensor that is differentiable in ``z``. Statistics are computed in fp32
whatever the input dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _batch_moments(z: Tensor) -> tuple[Tensor, Tensor]:
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"expected codes of shape (B >= 2, M), got {tuple(z.shape)}")
    z = z.float()
    mean = z.mean(dim=0)  # (M,)
    var = (z - mean).pow(2).mean(dim=0)  # (M,) maximum-likelihood (biased) variance of the fitted Gaussian
    return mean, var


def kl_gaussian(z: Tensor, eps: float = 1e-8) -> Tensor:
    """KL(N(m, diag s^2) || N(0, I)) of the diagonal Gaussian fitted to the batch (paper eq. 7).

    ``sum_j (s_j^2 + m_j^2) / 2 - log s_j - 1/2`` with m_j, s_j the batch mean and
    (maximum-likelihood) standard deviation of coordinate j. Zero exactly when the
    batch has zero mean and unit variance in every coordinate. On the unit sphere
    the uniform distribution attains the lowest value among all distributions
    (paper 3.1), which is what makes it a valid divergence to the sphere prior.
    """
    mean, var = _batch_moments(z)
    # log s_j = 0.5 * log s_j^2; eps guards a collapsed coordinate.
    return (0.5 * (var + mean.pow(2)) - 0.5 * torch.log(var + eps) - 0.5).sum()


def kl_gaussian_reference(z: Tensor, eps: float = 1e-8) -> Tensor:
    """The formula of the authors' released AGE code (``KLN01Loss``, direction "qp").

    It differs from paper eq. 7 in two ways: the variance v_j is used where the
    standard deviation belongs (``(v_j^2 + m_j^2)/2 - log v_j - 1/2``), and the
    terms are averaged over coordinates instead of summed. Its minimiser is still
    zero mean and unit variance, but its scale and gradients differ from eq. 7: at
    the variance 1/M of codes uniform on the sphere, d/dv is v - 1/v against eq. 7's
    (1 - 1/v)/2 summed. It is agelab's default divergence because the paper's game
    trains with it at the authors' weights and not with eq. 7 (docs/results.md).
    """
    mean, var = _batch_moments(z)
    return (0.5 * (var.pow(2) + mean.pow(2)) - torch.log(var + eps) - 0.5).mean()


def ideal_gaussian_divergence(name: str, m: int) -> float:
    """The fitted-Gaussian divergence of ideal codes uniform on the unit sphere S^(M-1): mean 0, variance 1/M.

    ``name`` "gaussian" (eq. 7, summed over the M coordinates) or "gaussian_reference" (the
    authors' formula, averaged); the floor that the authors' adaptive adversary weight compares with.
    """
    v = 1.0 / m
    if name == "gaussian":
        return m * (0.5 * v - 0.5 * math.log(v) - 0.5)
    if name == "gaussian_reference":
        return 0.5 * v * v - math.log(v) - 0.5
    raise ValueError(f"no ideal value for divergence {name!r}")


def _knn_log_dist(a: Tensor, b: Tensor, k: int, exclude_self: bool) -> Tensor:
    """log of the distance from each row of ``a`` to its k-th nearest row of ``b``. (len(a),)"""
    d2 = (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2.0 * a @ b.T).clamp_min(1e-12)  # (A, B)
    if exclude_self:
        d2 = d2.masked_fill(torch.eye(len(a), dtype=torch.bool, device=a.device), float("inf"))
    kth = torch.topk(d2, k, dim=1, largest=False).values[:, k - 1]  # (A,)
    return 0.5 * torch.log(kth)


def kl_knn(z: Tensor, prior_samples: Tensor, k: int = 1, dim: int | None = None) -> Tensor:
    """Nearest-neighbour (Kozachenko-Leonenko type) estimate of KL(Q || P) from samples.

    With n codes z ~ Q and m samples y ~ P (Wang, Kulkarni and Verdu 2009):

        KL ~= d/n * sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1))

    where rho_k(i) is the distance from z_i to its k-th nearest neighbour among the
    other codes and nu_k(i) to its k-th nearest prior sample. ``d`` is the
    intrinsic dimension of the support: M in R^M (default), M - 1 for codes and
    prior samples on the unit sphere. Differentiable in ``z`` (through the
    distances); the prior samples are treated as constants.
    """
    if z.dim() != 2 or prior_samples.dim() != 2 or z.shape[1] != prior_samples.shape[1]:
        raise ValueError(f"expected (n, M) and (m, M) inputs, got {tuple(z.shape)} and {tuple(prior_samples.shape)}")
    n, m = z.shape[0], prior_samples.shape[0]
    if not 1 <= k < n or k > m:
        raise ValueError(f"k={k} needs more than k codes and at least k prior samples (n={n}, m={m})")
    d = z.shape[1] if dim is None else dim
    z = z.float()
    y = prior_samples.detach().float()
    log_rho = _knn_log_dist(z, z, k, exclude_self=True)  # (n,)
    log_nu = _knn_log_dist(z, y, k, exclude_self=False)  # (n,)
    return d * (log_nu - log_rho).mean() + math.log(m / (n - 1))


def gaussian_kl_closed_form(mean_p: Tensor, var_p: Tensor, mean_q: Tensor, var_q: Tensor) -> Tensor:
    """KL(N(mean_p, diag var_p) || N(mean_q, diag var_q)); used by tests and docs."""
    return 0.5 * (torch.log(var_q / var_p) + (var_p + (mean_p - mean_q).pow(2)) / var_q - 1).sum()
