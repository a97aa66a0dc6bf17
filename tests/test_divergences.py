"""Latent divergences: closed forms, minimisers, nearest-neighbour consistency, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from agelab.divergences import gaussian_kl_closed_form, kl_gaussian, kl_gaussian_reference, kl_knn
from agelab.latent import SpherePrior


def batch_with_moments(mean, std, n: int = 64, seed: int = 0) -> torch.Tensor:
    """A float64 batch (n, M) whose per-coordinate mean and biased std are exactly ``mean`` and ``std``."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, mean.numel(), generator=g, dtype=torch.float64)
    u = (u - u.mean(0)) / u.std(0, unbiased=False)  # exactly zero mean, unit biased std
    return mean + std * u


def eq7(mean, std) -> float:
    """Paper eq. 7: sum_j (s_j^2 + m_j^2)/2 - log s_j - 1/2."""
    return sum((s * s + m * m) / 2 - math.log(s) - 0.5 for m, s in zip(mean, std))


def reference_formula(mean, std) -> float:
    """The original code's formula: mean_j (v_j^2 + m_j^2)/2 - log v_j - 1/2, v = s^2."""
    terms = [((s * s) ** 2 + m * m) / 2 - math.log(s * s) - 0.5 for m, s in zip(mean, std)]
    return sum(terms) / len(terms)


# ---------------------------------------------------------------------------
# kl_gaussian (paper eq. 7)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mean,std",
    [
        ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
        ([0.5, -1.0, 2.0], [1.0, 1.0, 1.0]),
        ([0.0, 0.0], [0.25, 3.0]),
        ([0.3, -0.7, 0.1, 1.5], [0.5, 2.0, 1.3, 0.1]),
    ],
)
def test_kl_gaussian_matches_closed_form(mean, std):
    z = batch_with_moments(mean, std)
    assert torch.allclose(z.mean(0), torch.tensor(mean, dtype=torch.float64), atol=1e-12)
    got = kl_gaussian(z).item()
    assert got == pytest.approx(eq7(mean, std), rel=1e-5, abs=1e-5)


def test_kl_gaussian_uses_biased_std_on_a_two_point_batch():
    # rows m + s and m - s: mean m, biased std s (the unbiased std would be s * sqrt(2))
    m, s = torch.tensor([0.4, -0.2]), torch.tensor([0.5, 1.5])
    z = torch.stack([m + s, m - s])
    assert kl_gaussian(z).item() == pytest.approx(eq7(m.tolist(), s.tolist()), rel=1e-5)


def test_kl_gaussian_is_sum_over_coordinates():
    one = batch_with_moments([0.5], [2.0])
    both = torch.cat([one, one], dim=1)
    assert kl_gaussian(both).item() == pytest.approx(2 * kl_gaussian(one).item(), rel=1e-6)


def test_kl_gaussian_near_zero_for_large_standard_normal_batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200_000, 4, generator=g)
    assert 0 <= kl_gaussian(z).item() < 1e-3


def test_kl_gaussian_grows_for_shifted_and_scaled_batches():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50_000, 4, generator=g)
    base = kl_gaussian(z).item()
    assert kl_gaussian(z + 0.5).item() > base + 0.4  # 4 * 0.5^2 / 2 = 0.5
    assert kl_gaussian(2.0 * z).item() > base + 1.0  # 4 * (2 - log 2 - 1/2) ~ 3.2
    assert kl_gaussian(0.5 * z).item() > base + 0.5  # 4 * (1/8 + log 2 - 1/2) ~ 1.3


def test_kl_gaussian_minimal_at_zero_mean_unit_std():
    values = {}
    for m in (-0.5, -0.1, 0.0, 0.1, 0.5):
        for s in (0.5, 0.9, 1.0, 1.1, 2.0):
            values[(m, s)] = kl_gaussian(batch_with_moments([m, m], [s, s])).item()
    best = min(values, key=values.get)
    assert best == (0.0, 1.0)
    assert values[best] == pytest.approx(0.0, abs=1e-6)
    assert all(v >= 0 for v in values.values())


def test_kl_gaussian_gradient_flows_to_codes_and_descends():
    g = torch.Generator().manual_seed(2)
    z = (0.3 + 2.0 * torch.randn(32, 5, generator=g)).requires_grad_(True)
    loss = kl_gaussian(z)
    loss.backward()
    assert z.grad is not None and z.grad.shape == z.shape
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with torch.no_grad():
        assert kl_gaussian(z - 0.1 * z.grad).item() < loss.item()


def test_kl_gaussian_computes_in_fp32_for_half_inputs():
    z = batch_with_moments([0.2, -0.3], [0.8, 1.2]).half()
    out = kl_gaussian(z)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(eq7([0.2, -0.3], [0.8, 1.2]), abs=5e-3)


# ---------------------------------------------------------------------------
# kl_gaussian_reference (the original code's formula)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mean,std",
    [([0.0, 0.0], [1.0, 1.0]), ([0.5, -1.0, 2.0], [0.5, 2.0, 1.3]), ([0.1], [3.0])],
)
def test_kl_gaussian_reference_matches_documented_formula(mean, std):
    z = batch_with_moments(mean, std)
    assert kl_gaussian_reference(z).item() == pytest.approx(reference_formula(mean, std), rel=1e-5, abs=1e-5)


def test_kl_gaussian_reference_differs_from_eq7_but_shares_minimiser():
    z = batch_with_moments([0.3, -0.4, 0.0], [2.0, 0.5, 1.5])
    assert abs(kl_gaussian_reference(z).item() - kl_gaussian(z).item()) > 0.1
    unit = batch_with_moments([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert kl_gaussian_reference(unit).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_gaussian(unit).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------
# kl_knn (Kozachenko-Leonenko / Wang-Kulkarni-Verdu estimator)
# ---------------------------------------------------------------------------
MEAN_P = torch.tensor([0.5, -0.3])
VAR_P = torch.tensor([0.5, 2.0])


def _knn_error(n: int, seed: int, k: int = 1) -> float:
    g = torch.Generator().manual_seed(seed)
    z = MEAN_P + VAR_P.sqrt() * torch.randn(n, 2, generator=g)  # Q = N(MEAN_P, diag VAR_P)
    y = torch.randn(n, 2, generator=g)  # P = N(0, I)
    true = gaussian_kl_closed_form(MEAN_P, VAR_P, torch.zeros(2), torch.ones(2)).item()
    return kl_knn(z, y, k=k).item() - true


def test_gaussian_kl_closed_form_known_values():
    zero, one = torch.zeros(3), torch.ones(3)
    assert gaussian_kl_closed_form(zero, one, zero, one).item() == pytest.approx(0.0, abs=1e-7)
    # KL(N(1, 1) || N(0, 1)) = 1/2 per coordinate
    assert gaussian_kl_closed_form(one, one, zero, one).item() == pytest.approx(1.5, rel=1e-6)
    # KL(N(0, 4) || N(0, 1)) = (4 - 1 - log 4) / 2
    assert gaussian_kl_closed_form(zero[:1], 4 * one[:1], zero[:1], one[:1]).item() == pytest.approx(
        (3 - math.log(4)) / 2, rel=1e-6
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_knn_close_to_true_gaussian_kl_for_large_samples(seed):
    assert abs(_knn_error(2000, seed)) < 0.15


def test_kl_knn_error_shrinks_as_samples_grow():
    small = sum(abs(_knn_error(50, s)) for s in range(6)) / 6
    large = sum(abs(_knn_error(2000, s)) for s in range(6)) / 6
    assert large < small
    assert large < 0.1


def test_kl_knn_with_larger_k_also_consistent():
    assert abs(_knn_error(2000, 0, k=5)) < 0.15


def test_kl_knn_near_zero_for_same_distribution():
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        z, y = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
        assert abs(kl_knn(z, y).item()) < 0.1


@pytest.mark.parametrize("n,m", [(1000, 4000), (4000, 500)])
def test_kl_knn_corrects_for_unequal_sample_sizes(n, m):
    # the log(m / (n - 1)) term: without it these estimates would be off by ~log(4) and ~log(1/8)
    g = torch.Generator().manual_seed(8)
    y = torch.randn(m, 2, generator=g)
    assert abs(kl_knn(torch.randn(n, 2, generator=g), y).item()) < 0.1
    z = MEAN_P + VAR_P.sqrt() * torch.randn(n, 2, generator=g)
    true = gaussian_kl_closed_form(MEAN_P, VAR_P, torch.zeros(2), torch.ones(2)).item()
    assert abs(kl_knn(z, y).item() - true) < 0.2


def test_kl_knn_on_the_sphere_uses_intrinsic_dimension():
    prior = SpherePrior(3)
    g = torch.Generator().manual_seed(6)
    z, y = prior.sample(2000, generator=g), prior.sample(2000, generator=g)
    assert abs(kl_knn(z, y, dim=prior.intrinsic_dim).item()) < 0.1
    # codes squeezed into one cap of the sphere are far from uniform
    cap = prior.project(torch.randn(2000, 3, generator=g) * 0.2 + torch.tensor([1.0, 0.0, 0.0]))
    assert kl_knn(cap, y, dim=prior.intrinsic_dim).item() > 1.0


def test_kl_knn_is_differentiable_in_codes_only():
    g = torch.Generator().manual_seed(7)
    z = (torch.randn(64, 3, generator=g) + 1.0).requires_grad_(True)
    y = torch.randn(128, 3, generator=g).requires_grad_(True)
    out = kl_knn(z, y, k=2)
    assert out.dim() == 0 and torch.isfinite(out)
    out.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert y.grad is None  # prior samples are constants


@pytest.mark.parametrize(
    "fn",
    [
        lambda: kl_gaussian(torch.randn(8)),  # 1-D
        lambda: kl_gaussian(torch.randn(1, 4)),  # one code: no batch statistics
        lambda: kl_gaussian(torch.randn(2, 3, 4)),  # 3-D
        lambda: kl_gaussian_reference(torch.randn(1, 4)),
        lambda: kl_knn(torch.randn(8, 3), torch.randn(8, 4)),  # dimension mismatch
        lambda: kl_knn(torch.randn(8), torch.randn(8, 1)),  # 1-D codes
        lambda: kl_knn(torch.randn(8, 3), torch.randn(8, 3), k=8),  # k >= n
        lambda: kl_knn(torch.randn(8, 3), torch.randn(2, 3), k=3),  # k > m
        lambda: kl_knn(torch.randn(8, 3), torch.randn(8, 3), k=0),
    ],
)
def test_bad_shapes_raise_value_error(fn):
    with pytest.raises(ValueError):
        fn()
