"""AIS log-likelihood (agelab.metrics.ais): exactness on a linear-Gaussian decoder, BDMC, the sphere
pushforward, the AGE/MNIST wrapper and ``agelab eval --ais``. Tiny dimensions: seconds in all."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import invoke, tiny_config

from agelab.metrics.ais import (AISConfig, ais_log_likelihood, ais_section, beta_schedule, frozen_decoder, grid_images,
                                log_mean_exp, model_log_likelihood)

TINY_AIS = AISConfig(images=2, chains=2, steps=4, sigma_grid=(0.1, 0.3), sigma_images=2, sigma_chains=1,
                     bdmc_images=1)


def linear_gaussian(m=2, d=5, sigma=0.5, seed=0):
    """g(z) = W z + b with z ~ N(0, I): p(x) = N(x; b, W W^T + sigma^2 I) exactly."""
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(d, m, generator=g), 0.5 * torch.randn(d, generator=g)
    exact = torch.distributions.MultivariateNormal(b, w @ w.T + sigma**2 * torch.eye(d))
    return (lambda z: z @ w.T + b), exact


def test_beta_schedules_run_from_zero_to_one():
    for kind in ("sigmoid", "linear"):
        b = beta_schedule(50, kind)
        assert len(b) == 51 and b[0] == 0 and b[-1] == 1 and bool((b.diff() > 0).all())
    assert beta_schedule(1).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        beta_schedule(10, "cosine")


def test_log_mean_exp_and_its_standard_error():
    logw = torch.tensor([[0.0, 0.0, 0.0], [math.log(1.0), math.log(2.0), math.log(3.0)]], dtype=torch.float64)
    est, se = log_mean_exp(logw)
    assert torch.allclose(est, torch.tensor([0.0, math.log(2.0)], dtype=torch.float64))
    assert se[0] == 0 and abs(float(se[1]) - 1.0 / (math.sqrt(3) * 2.0)) < 1e-9


def test_ais_matches_the_closed_form_of_a_linear_gaussian_decoder():
    sigma = 0.5
    mean_fn, exact = linear_gaussian(sigma=sigma)
    x = exact.sample((3,))
    res = ais_log_likelihood(mean_fn, x, sigma, 2, prior="gaussian", chains=32, steps=400, leapfrog=2, seed=0,
                             bdmc_images=3, progress=False)
    truth = exact.log_prob(x).double()
    assert res.log_p.shape == (3,) and res.std_err.shape == (3,) and res.log_w.shape == (3, 32)
    assert bool(((res.log_p - truth).abs() <= 4 * res.std_err + 0.1).all()), (res.log_p, truth, res.std_err)
    assert 0.4 < res.accept_rate < 0.95 and res.decoder_evals == 399 * 2 + 1
    # BDMC sandwich on simulated data: lower <= log p(x) <= upper, up to noise; the gap is small here
    bd = res.bdmc
    truth_sim = exact.log_prob(bd.x).double()
    assert bool((bd.lower <= truth_sim + 4 * bd.lower_err + 0.05).all()), (bd.lower, truth_sim, bd.lower_err)
    assert bool((bd.upper >= truth_sim - 4 * bd.upper_err - 0.05).all()), (bd.upper, truth_sim, bd.upper_err)
    assert float(bd.gap.mean()) < 0.3


def test_bdmc_gap_shrinks_with_more_intermediate_distributions():
    sigma = 0.2
    mean_fn, exact = linear_gaussian(m=3, d=6, sigma=sigma, seed=1)
    gaps = []
    for steps in (5, 300):
        res = ais_log_likelihood(mean_fn, torch.zeros(0, 6), sigma, 3, chains=16, steps=steps, bdmc_images=4,
                                 seed=0, progress=False)
        gaps.append(float(res.bdmc.gap.mean()))
    assert gaps[0] > 1.0 and gaps[1] < 0.5 * gaps[0], gaps


def test_sphere_prior_pushforward_matches_plain_monte_carlo():
    """p(x) = E_{z uniform on the sphere} N(x; g(z), sigma^2 I), by brute force in 3 dimensions."""
    g = torch.Generator().manual_seed(3)
    w, b, sigma = torch.randn(4, 3, generator=g), 0.2 * torch.randn(4, generator=g), 0.4
    mean_fn = lambda z: torch.tanh(z @ w.T + b)  # noqa: E731
    z = torch.randn(2, 3, generator=g)
    x = mean_fn(z / z.norm(dim=1, keepdim=True)) + 0.1 * torch.randn(2, 4, generator=g)
    zs = torch.randn(400_000, 3, generator=g)
    means = mean_fn(zs / zs.norm(dim=1, keepdim=True))  # (S, 4)
    ll = torch.distributions.Normal(means.unsqueeze(1), sigma).log_prob(x).sum(-1).double()  # (S, 2)
    brute = torch.logsumexp(ll, 0) - math.log(len(zs))
    res = ais_log_likelihood(mean_fn, x, sigma, 3, prior="sphere", chains=32, steps=300, leapfrog=2, seed=0,
                             progress=False)
    assert bool(torch.isfinite(res.log_p).all()) and bool(torch.isfinite(res.std_err).all())
    assert bool(((res.log_p - brute).abs() <= 4 * res.std_err + 0.05).all()), (res.log_p, brute, res.std_err)


def _tiny_age(prior="sphere"):
    from agelab.trainer import build_model

    torch.manual_seed(0)
    return build_model(tiny_config("unused", dataset="mnist", prior=prior), channels=1).eval()


def _padded_u8(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    digits = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    return torch.nn.functional.pad(digits, (2, 2, 2, 2)), digits


def test_grid_images_recover_the_original_28x28_pixels():
    padded, digits = _padded_u8(3)
    x = grid_images(padded, 32)
    assert x.shape == (3, 784) and torch.equal(x, digits.flatten(1).float() / 255)
    with pytest.raises(ValueError, match="28x28"):
        grid_images(torch.zeros(1, 1, 64, 64, dtype=torch.uint8), 64)


@pytest.mark.parametrize("prior", ["sphere", "gaussian"])
def test_model_log_likelihood_section(prior, capsys):
    model = _tiny_age(prior)
    test_u8, _ = _padded_u8(5, 1)
    train_u8, _ = _padded_u8(5, 2)
    flags = [p.requires_grad for p in model.parameters()]
    sec = model_log_likelihood(model, test_u8, train_u8, TINY_AIS, progress=False)
    assert capsys.readouterr().err == ""  # progress bars off
    assert [p.requires_grad for p in model.parameters()] == flags  # frozen only during AIS
    assert sec["protocol"] == "Wu et al. 2017 AIS, Gaussian observation model on the 28x28 grid"
    assert math.isfinite(sec["value"]) and math.isfinite(sec["std_error"]) and len(sec["per_image"]) == 2
    assert sec["sigma"]["value"] in (0.1, 0.3) and set(sec["sigma"]["grid"]) == {"0.1", "0.3"}
    assert "training-split" in sec["sigma"]["chosen_by"]
    assert sec["n_images"] == 2 and sec["chains"] == 2 and sec["intermediate_distributions"] == 4
    assert sec["bdmc"]["n_images"] == 1 and math.isfinite(sec["bdmc"]["gap"])
    assert ("sphere" in sec["latent"]) == (prior == "sphere")
    fixed = model_log_likelihood(model, test_u8, train_u8, AISConfig(**{**TINY_AIS.__dict__, "sigma": 0.2,
                                                                       "bdmc_images": 0}), progress=False)
    assert fixed["sigma"] == {"value": 0.2, "chosen_by": "given (--ais-sigma)", "grid": None} and "bdmc" not in fixed


def test_frozen_decoder_restores_the_model():
    model = _tiny_age().train()
    model.requires_grad_(True)
    with frozen_decoder(model) as m:
        assert not m.training and not any(p.requires_grad for p in m.parameters())
        conv = m.generator.net[3].weight
        assert conv.is_contiguous(memory_format=torch.channels_last)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert model.generator.net[3].weight.is_contiguous()


def test_ais_section_skips_other_datasets_with_a_reason():
    model = _tiny_age()
    sec, why = ais_section(model, "cifar10", 32, None, None, TINY_AIS, progress=False)
    assert sec is None and "mnist" in why and "cifar10" in why
    sec, why = ais_section(model, "mnist", 64, None, None, TINY_AIS, progress=False)
    assert sec is None and "28x28" in why


def test_ais_config_validation():
    with pytest.raises(ValueError, match="chains"):
        AISConfig(chains=0).validate()
    with pytest.raises(ValueError, match="sigma"):
        AISConfig(sigma=-1.0).validate()


def test_eval_with_ais_on_a_mnist_run(fake_mnist, tmp_path, capsys):
    """``agelab eval --ais`` end to end on a 4-iteration run over 24 fake MNIST images."""
    from agelab.nets.classifier import SmallCNN, save_classifier
    from agelab.trainer import train

    folder, _ = fake_mnist
    run = train(tiny_config(tmp_path / "runs", dataset="mnist", data_root=str(folder), iterations=2,
                            ckpt_every=2), progress=False)
    clf = save_classifier(SmallCNN(1, 10, width=4), tmp_path / "mnist.safetensors", {"dataset": "mnist"})
    code, out, err = invoke(["eval", run, "--classifier", clf, "--n-samples", "8", "--no-progress", "--ais",
                             "--ais-images", "3", "--ais-chains", "2", "--ais-steps", "3", "--ais-sigma", "0.1"],
                            capsys)
    assert code == 0, err
    result = json.loads((run / "eval.json").read_text())
    ll = result["log_likelihood"]
    assert ll["n_images"] == 3 and ll["chains"] == 2 and ll["intermediate_distributions"] == 3
    assert ll["sigma"]["value"] == 0.1 and ll["bdmc"]["intermediate_distributions"] == 3
    assert "log_likelihood" not in result["skipped"]
    assert "log_likelihood (AIS)" in out and "Log-likelihood (AIS)" in (run / "eval.html").read_text()


def test_eval_help_lists_the_ais_options(capsys):
    code, out, _ = invoke(["eval", "--help"], capsys)
    assert code == 0
    for option in ("--ais", "--ais-images", "--ais-chains", "--ais-steps", "--ais-leapfrog", "--ais-sigma"):
        assert option in out
