"""Latent priors and spherical interpolation."""

from __future__ import annotations

import pytest
import torch

from agelab.latent import GaussianPrior, SpherePrior, make_prior, slerp


def test_sphere_prior_samples_have_unit_norm_and_zero_mean():
    prior = SpherePrior(8)
    z = prior.sample(5000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (5000, 8)
    assert torch.allclose(z.norm(dim=1), torch.ones(5000), atol=1e-5)
    assert z.mean(0).abs().max().item() < 0.03  # coordinate std is 1/sqrt(8): 5000 samples -> ~0.005
    # uniform on S^7: each coordinate has second moment 1/M
    assert torch.allclose(z.pow(2).mean(0), torch.full((8,), 1 / 8), atol=0.01)


def test_prior_sampling_is_reproducible_with_a_generator():
    for prior in (SpherePrior(5), GaussianPrior(5)):
        a = prior.sample(16, generator=torch.Generator().manual_seed(3))
        b = prior.sample(16, generator=torch.Generator().manual_seed(3))
        c = prior.sample(16, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_sphere_project_maps_to_unit_norm_keeping_direction():
    prior = SpherePrior(6)
    h = torch.randn(32, 6) * torch.logspace(-3, 3, 32).unsqueeze(1)
    p = prior.project(h)
    assert torch.allclose(p.norm(dim=1), torch.ones(32), atol=1e-5)
    assert torch.allclose(p * h.norm(dim=1, keepdim=True), h, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(prior.project(torch.zeros(2, 6))).all()  # no division by zero


def test_gaussian_prior_leaves_codes_unchanged_and_samples_standard_normal():
    prior = GaussianPrior(4)
    h = torch.randn(10, 4) * 7
    assert torch.equal(prior.project(h), h)
    z = prior.sample(20000, generator=torch.Generator().manual_seed(1))
    assert z.mean(0).abs().max() < 0.05 and (z.std(0) - 1).abs().max() < 0.05


def test_intrinsic_dimensions_and_factory():
    assert SpherePrior(10).intrinsic_dim == 9
    assert GaussianPrior(10).intrinsic_dim == 10
    assert isinstance(make_prior("sphere", 3), SpherePrior)
    assert isinstance(make_prior("gaussian", 3), GaussianPrior)
    with pytest.raises(ValueError):
        make_prior("uniform", 3)


def _unit(n, m, seed):
    return SpherePrior(m).sample(n, generator=torch.Generator().manual_seed(seed))


def test_slerp_shape_and_endpoints():
    a, b = _unit(5, 7, 0), _unit(5, 7, 1)
    t = torch.linspace(0, 1, 9)
    out = slerp(a, b, t)
    assert out.shape == (5, 9, 7)
    assert torch.allclose(out[:, 0], a, atol=1e-5)
    assert torch.allclose(out[:, -1], b, atol=1e-5)


def test_slerp_of_unit_vectors_stays_on_sphere_at_equal_angular_steps():
    a, b = _unit(6, 4, 2), _unit(6, 4, 3)
    t = torch.linspace(0, 1, 11)
    out = slerp(a, b, t)
    assert torch.allclose(out.norm(dim=2), torch.ones(6, 11), atol=1e-5)
    # great-circle interpolation: the angle to a grows linearly with t
    omega = torch.acos((a * b).sum(1).clamp(-1, 1))  # (6,)
    angle_to_a = torch.acos((out * a.unsqueeze(1)).sum(2).clamp(-1, 1))  # (6, 11)
    assert torch.allclose(angle_to_a, omega.unsqueeze(1) * t, atol=1e-3)


def test_slerp_interpolates_norm_linearly_for_gaussian_codes():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(3, 5, generator=g) * 2, torch.randn(3, 5, generator=g) * 0.5
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    out = slerp(a, b, t)
    expected = (1 - t) * a.norm(dim=1, keepdim=True) + t * b.norm(dim=1, keepdim=True)
    assert torch.allclose(out.norm(dim=2), expected, atol=1e-4)


def test_slerp_parallel_and_antiparallel_pairs_are_finite():
    a = _unit(2, 3, 5)
    t = torch.linspace(0, 1, 5)
    same = slerp(a, a.clone(), t)
    assert torch.isfinite(same).all()
    assert torch.allclose(same, a.unsqueeze(1).expand(-1, 5, -1), atol=1e-4)
    opposite = slerp(a, -a, t)
    assert torch.isfinite(opposite).all()
    assert torch.allclose(opposite[:, 0], a, atol=1e-4) and torch.allclose(opposite[:, -1], -a, atol=1e-4)
