"""The baselines (``--model dcgan|vae|ali``): same trainer, run folders, checkpoints, CLI and eval as AGE."""

from __future__ import annotations

import json
import math

import pytest
import torch

import agelab
from agelab.config import ConfigError, TrainConfig, build_config
from agelab.models import BASELINE_MODELS, make_model
from agelab.models.age import ModelConfig
from agelab.runs import read_metrics
from agelab.trainer import train
from conftest import assert_same_tensors, checkpoint_weights, invoke

PRIOR = {"dcgan": "sphere", "vae": "gaussian", "ali": "sphere"}
PHASES = {"dcgan": ["disc", "gen"], "vae": ["vae"], "ali": ["disc", "encgen"]}


def _model(kind: str, width: int = 4, latent: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_model(ModelConfig(latent_dim=latent, channels=1, image_size=32, width=width, prior=PRIOR[kind],
                                  model=kind))


@pytest.fixture(scope="module", params=BASELINE_MODELS)
def baseline_run(request, tmp_path_factory):
    """A finished 6-iteration digits run of each baseline (checkpoints at 3 and 6). Read-only."""
    from conftest import tiny_config

    kind = request.param
    cfg = tiny_config(tmp_path_factory.mktemp(kind), model=kind, prior=PRIOR[kind], iterations=6, ckpt_every=3,
                      log_every=3)
    return kind, train(cfg, progress=False)


@pytest.mark.parametrize("kind", ["dcgan", "ali"])
def test_discriminator_learns_to_separate_a_fixed_batch(kind):
    """D's loss falls when only D is trained against a frozen generator (and encoder)."""
    model = _model(kind, width=8)
    phases = model.phases()
    disc = phases[0]
    for p in phases:
        p.module.requires_grad_(p is disc)
    opt = torch.optim.Adam(disc.module.parameters(), lr=2e-3, betas=(0.5, 0.999))
    x = torch.rand(16, 1, 32, 32) * 2 - 1
    losses = []
    for _ in range(30):
        torch.manual_seed(1)  # the same latent batch each step
        opt.zero_grad()
        loss, _ = disc.loss(x)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_vae_loss_is_the_negative_elbo_in_nats_per_pixel():
    """Closed form at the optimal sigma (sigma^2 = MSE): NLL per pixel = 1/2 + 1/2 log(2 pi MSE), plus KL / D."""
    model = _model("vae")
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    mu, logvar = torch.full((4, 4), 0.5), torch.full((4, 4), -1.0)
    model.posterior = lambda x: (mu, logvar)
    torch.manual_seed(3)
    loss, logs = model.loss(x)
    torch.manual_seed(3)
    z = mu + torch.randn(4, 4) * math.exp(-0.5)
    d = 32 * 32
    mse = (model.decode(z) - x).pow(2).mean()
    kl = 4 * 0.5 * (0.25 + math.exp(-1.0) - 1 + 1.0)  # per image: M/2 (mu^2 + e^logvar - 1 - logvar)
    assert logs["kl"].item() == pytest.approx(kl, rel=1e-6)
    assert logs["sigma"].item() == pytest.approx(mse.sqrt().item(), rel=1e-5)
    expected = 0.5 + 0.5 * math.log(2 * math.pi * mse.item()) + kl / d
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_vae_needs_the_gaussian_prior():
    assert build_config(None, dataset="digits", model="vae").prior == "gaussian"  # the default with this model
    with pytest.raises(ConfigError, match="--prior"):
        TrainConfig(dataset="digits", model="vae", prior="sphere").validate()
    with pytest.raises(ValueError, match="prior"):
        make_model(ModelConfig(latent_dim=4, channels=1, width=4, prior="sphere", model="vae"))


def test_vae_loss_falls(tiny_cfg):
    run = train(tiny_cfg(model="vae", prior="gaussian", iterations=40, log_every=10, ckpt_every=40, width=8,
                         batch_size=32), progress=False)
    losses = [r["vae/loss"] for r in read_metrics(run) if "vae/loss" in r]
    assert losses[-1] < losses[0] - 0.1, losses


def test_baseline_run_folder_checkpoints_and_report(baseline_run):
    kind, run = baseline_run
    assert json.loads((run / "config.json").read_text())["model"] == kind
    records = [r for r in read_metrics(run) if "step" in r and "lr" in r]
    assert [r["step"] for r in records] == [3, 6]
    assert {f"{p}/loss" for p in PHASES[kind]} <= set(records[-1])
    assert (run / "samples.png").is_file() and (run / "interpolations.png").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert ("test_reconstruction" in summary) == (kind != "dcgan")
    assert (run / "reconstructions.png").is_file() == (kind != "dcgan")
    assert "agelab run" in (run / "report.html").read_text()


def test_baseline_loads_samples_and_reconstructs(baseline_run):
    kind, run = baseline_run
    model = agelab.load(run)
    assert type(model).__name__ == {"dcgan": "DCGAN", "vae": "VAE", "ali": "ALI"}[kind]
    x = model.sample(5)
    assert x.shape == (5, 1, 32, 32) and x.abs().max() <= 1
    if kind == "dcgan":
        with pytest.raises(NotImplementedError, match="no encoder"):
            model.encode(x)
    else:
        z = model.encode(x)
        assert z.shape == (5, 4)
        if kind == "ali":  # the encoder maps onto the sphere prior's support
            assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)


@pytest.mark.parametrize("kind", BASELINE_MODELS)
def test_baseline_resume_is_exact(kind, tiny_cfg):
    straight = train(tiny_cfg(model=kind, prior=PRIOR[kind], iterations=6, ckpt_every=3, tag="a"), progress=False)
    first = train(tiny_cfg(model=kind, prior=PRIOR[kind], iterations=3, ckpt_every=3, tag="b"), progress=False)
    resumed = train(resume=first, overrides={"iterations": 6}, progress=False)
    assert_same_tensors(checkpoint_weights(straight, 6), checkpoint_weights(resumed, 6))


def test_cli_reconstruct_of_a_dcgan_is_one_clear_line(baseline_run, capsys, tmp_path):
    kind, run = baseline_run
    code, out, err = invoke(["reconstruct", run, "--out", tmp_path / "r.png"], capsys)
    if kind == "dcgan":
        assert code == 2 and "no encoder" in err and len(err.strip().splitlines()) == 1
    else:
        assert code == 0, err
        assert (tmp_path / "r.png").is_file() and "PSNR" in out


def test_eval_of_each_baseline(baseline_run, capsys, tmp_path):
    """eval works on every baseline; a DCGAN's encoder metrics are listed as skipped, with the reason."""
    from agelab.evaluate import evaluate_run
    from agelab.metrics.features import ClassifierExtractor
    from agelab.nets.classifier import SmallCNN

    kind, run = baseline_run
    torch.manual_seed(0)
    extractor = ClassifierExtractor(SmallCNN(channels=1, classes=10, width=4), name="random-cnn")
    result = evaluate_run(run, features=extractor, n_samples=64, progress=False, write=True)
    metrics = result["metrics"]
    assert result["model"] == kind and {"fid", "kid", "precision", "recall"} <= set(metrics)
    if kind == "dcgan":
        assert {"reconstruction", "latent_cycle", "linear_probe"} <= set(result["skipped"])
        assert "recon_l1" not in metrics and "no encoder" in result["skipped"]["reconstruction"]
    else:
        assert {"recon_l1", "recon_psnr", "latent_cycle", "probe_code_all_labels"} <= set(metrics)
    assert (run / "eval.html").is_file()
