"""Conditional AGE colorization (paper 3.2) and the pix2pix baseline: Lab handling, nets, phases, training,
loading, the colorize/transfer commands and the colorization metrics. Tiny nets, a few steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from kornia.color import rgb_to_lab
from PIL import Image

import agelab
from agelab import trainer
from agelab.colorize import ColorizeError, colorize, read_images, transfer
from agelab.colorspace import AB_SCALE, gray_rgb, lab_normalised_to_rgb, uint8_to_lab
from agelab.config import ConfigError, TrainConfig, build_config
from agelab.metrics.colorization import colorfulness, evaluate_colorization, pairwise_ab_distance
from agelab.models import make_model, model_class
from agelab.models.age import AGE, GameConfig, ModelConfig
from agelab.models.conditional import ConditionalAGE
from agelab.models.pix2pix import Pix2Pix
from agelab.nets.colorization import ColorizationGenerator, ConditionalEncoder
from agelab.nets.pix2pix import PatchDiscriminator, UNetGenerator
from agelab.trainer import train

from conftest import invoke

SWAPPED = dict(mu=0.0, lam=0.0, enc_latent_recon=1000.0, gen_image_recon=10.0)


def rgb_u8(n=6, size=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def tiny(kind: str, size: int = 32, **game) -> torch.nn.Module:
    """A tiny colorization model; the conditional AGE plays ``game`` (by default the swapped recipe's weights)."""
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=3, channels=3, image_size=size, width=4, model=kind, res_blocks=1)
    return make_model(cfg, GameConfig(**(game or SWAPPED)) if model_class(kind).age_game else None)


# ---------------------------------------------------------------------------
# Lab space
# ---------------------------------------------------------------------------
def test_lab_round_trip_is_within_a_small_tolerance():
    x = rgb_u8(8, 16)
    lightness, ab = uint8_to_lab(x)
    assert lightness.shape == (8, 1, 16, 16) and ab.shape == (8, 2, 16, 16)
    assert lightness.abs().max() <= 1 and ab.abs().max() <= 1
    back = lab_normalised_to_rgb(lightness, ab)  # (8, 3, 16, 16) in [0, 1]
    assert (back * 255 - x.float()).abs().max() < 0.05  # far below one grey level
    # the normalisation is kornia's Lab, rescaled: L / 50 - 1, ab / 110
    lab = rgb_to_lab(x.float() / 255)
    assert torch.allclose((lightness + 1) * 50, lab[:, :1], atol=1e-4)
    assert torch.allclose(ab * AB_SCALE, lab[:, 1:], atol=1e-3)


def test_gray_images_have_zero_ab_and_out_of_range_ab_is_clamped():
    gray = torch.full((2, 3, 8, 8), 128, dtype=torch.uint8)
    lightness, ab = uint8_to_lab(gray)
    assert ab.abs().max() < 1e-3
    assert torch.allclose(gray_rgb(lightness) * 255, gray.float(), atol=0.05)
    wild = lab_normalised_to_rgb(lightness, torch.full((2, 2, 8, 8), 5.0))  # far outside [-1, 1]
    assert wild.min() >= 0 and wild.max() <= 1


# ---------------------------------------------------------------------------
# networks and models
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 64])
def test_net_shapes(size):
    lightness, z = torch.rand(3, 1, size, size) * 2 - 1, torch.randn(3, 3)
    ab = ColorizationGenerator(3, width=4, res_blocks=2)(z, lightness)
    assert ab.shape == (3, 2, size, size) and ab.abs().max() <= 1
    assert ConditionalEncoder(3, size, width=4)(ab, lightness).shape == (3, 3)
    ab2 = UNetGenerator(3, size, width=4)(z, lightness)
    assert ab2.shape == (3, 2, size, size) and ab2.abs().max() <= 1
    logits = PatchDiscriminator(width=4)(ab2, lightness)
    assert logits.shape[:2] == (3, 1) and logits.shape[-1] >= 1


def test_conditional_encoder_maps_to_unit_sphere_and_z_changes_the_colorization():
    model = tiny("cage").eval()
    ab, lightness = model.prepare_batch(rgb_u8(4))
    z = model.encode(ab, lightness)
    assert z.shape == (4, 3) and torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    model.train()  # batch statistics: a fresh net's eval-mode outputs are ~1e-7 (DCGAN init, unit running var)
    with torch.no_grad():
        z1, z2 = model.sample_latent(4), model.sample_latent(4)
        a1, a2, a1_again = model.decode(z1, lightness), model.decode(z2, lightness), model.decode(z1, lightness)
    assert torch.equal(a1, a1_again)  # deterministic given (z, L)
    assert (a1 - a2).abs().mean() > 0.05 * a1.abs().mean()  # same L, different z -> different ab


def test_model_registry_and_model_json():
    assert model_class("age") is AGE and model_class("cage") is ConditionalAGE and model_class("pix2pix") is Pix2Pix
    with pytest.raises(ValueError, match="unknown model type"):
        model_class("normalizing-flow")
    age_dict = ModelConfig(latent_dim=4, channels=1).to_dict()
    assert "res_blocks" not in age_dict and age_dict["model"] == "age"  # model.json of AGE runs unchanged
    cage = ModelConfig(latent_dim=3, channels=3, image_size=64, model="cage", res_blocks=2)
    assert cage.to_dict()["res_blocks"] == 2 and ModelConfig.from_dict(cage.to_dict()) == cage


def test_build_model_dispatches_on_the_config_and_needs_colour_data():
    cfg = TrainConfig(dataset="cars", model="cage", image_size=32, latent_dim=3, width=4, res_blocks=1).validate()
    assert isinstance(trainer.build_model(cfg, 3), ConditionalAGE)
    assert isinstance(trainer.build_model(cfg.replace(model="pix2pix"), 3), Pix2Pix)
    with pytest.raises(ConfigError, match="--model"):
        trainer.build_model(cfg, 1)
    with pytest.raises(ConfigError, match="--model: cage colorizes colour images; mnist is grayscale"):
        TrainConfig(dataset="mnist", model="cage").validate()
    assert build_config("cars-colorization").model == "cage" and build_config("cars-colorization").latent_dim == 3
    assert build_config("cars-pix2pix").model == "pix2pix"


def test_conditional_losses_are_the_core_losses_on_the_batch():
    """The conditional model runs AGE's own encoder_loss/generator_loss (no copy): with the paper's weights
    the encoder loss is kl_real - kl_fake + mu * L1 of the conditional reconstruction."""
    model = tiny("cage", mu=7.0, lam=0.0)
    assert type(model).encoder_loss is AGE.encoder_loss and type(model).generator_loss is AGE.generator_loss
    batch = model.prepare_batch(rgb_u8(8))
    torch.manual_seed(1)
    loss, logs = model.encoder_loss(batch)
    assert torch.allclose(loss, logs["kl_real"] - logs["kl_fake"] + 7.0 * logs["rec_x"], atol=1e-4)


# ---------------------------------------------------------------------------
# training, loading, commands (a tiny cars-like image folder)
# ---------------------------------------------------------------------------
def _car_folder(path, n=40):
    """n small colour images of different sizes: a grey gradient with a coloured 'car' block."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 36 + i % 5, 44 + i % 7
        img = np.tile(np.linspace(40, 220, w, dtype=np.float32), (h, 1))[..., None].repeat(3, 2)
        color = rng.integers(0, 256, 3)
        img[h // 3 : 2 * h // 3, w // 4 : 3 * w // 4] = color
        Image.fromarray(img.astype(np.uint8)).save(path / f"{i:03d}.png")
    return path


@pytest.fixture(scope="module")
def colour_runs(tmp_path_factory):
    """Finished 3-iteration runs of cage and pix2pix on a tiny image folder: {kind: run folder}."""
    root = tmp_path_factory.mktemp("colour")
    folder = _car_folder(root / "cars")
    runs = {}
    for kind in ("cage", "pix2pix"):
        cfg = TrainConfig(dataset="folder", data_root=str(folder), image_size=32, model=kind, latent_dim=3, width=4,
                          res_blocks=1, batch_size=8, iterations=3, log_every=1, sample_every=2, ckpt_every=2,
                          device="cpu", out_dir=str(root / "runs"), tag=kind, **(SWAPPED if kind == "cage" else {}))
        runs[kind] = train(cfg.validate(), progress=False)
    return runs


@pytest.mark.parametrize("kind", ["cage", "pix2pix"])
def test_tiny_training_run_writes_colorization_outputs(colour_runs, kind):
    run = colour_runs[kind]
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first = "enc" if kind == "cage" else "disc"
    assert all(np.isfinite(r[f"{first}/loss"]) and np.isfinite(r["gen/loss"]) for r in records if "gen/loss" in r)
    assert (run / "colorizations.png").is_file() and (run / "grids" / "colorizations-0000002.png").is_file()
    assert (run / "transfer.png").is_file() == (kind == "cage")
    assert (run / "report.html").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == kind and summary["colorization"]["images"] == 4  # 40 images, every 10th is test
    model_json = json.loads(next((run / "checkpoints").glob("step-*/model.json")).read_text())
    assert model_json["model"] == kind


def test_colorization_run_resumes(colour_runs, tmp_path):
    import shutil

    run = tmp_path / colour_runs["cage"].name
    shutil.copytree(colour_runs["cage"], run)
    train(resume=run, overrides={"iterations": 5}, progress=False)  # model.json (with res_blocks) matches
    assert json.loads((run / "status.json").read_text())["step"] == 5
    assert json.loads((run / "summary.json").read_text())["step"] == 5


def test_load_rebuilds_the_right_class_and_colorize_transfer_shapes(colour_runs):
    cage, pix = agelab.load(colour_runs["cage"]), agelab.load(colour_runs["pix2pix"])
    assert isinstance(cage, ConditionalAGE) and isinstance(pix, Pix2Pix) and not cage.training
    images = rgb_u8(3, 32)
    for model in (cage, pix):
        out = colorize(model, images, k=5, seed=1)
        assert out.shape == (3, 5, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
        assert torch.equal(out, colorize(model, images, k=5, seed=1))  # seeded
        # every colorization keeps the input's lightness (up to gamut clipping)
        lightness = uint8_to_lab((out[:, 0] * 255).round().to(torch.uint8))[0]
        assert (lightness - uint8_to_lab(images)[0]).abs().mean() < 0.05
    moved = transfer(cage, images[:1], images)  # one source onto three targets
    assert moved.shape == (3, 3, 32, 32)
    with pytest.raises(ColorizeError, match="cage"):
        transfer(pix, images, images)


def test_colorize_and_transfer_commands(colour_runs, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((50, 70), 90, np.uint8), "L").save(src / "gray.png")  # grayscale, not square
    Image.fromarray(np.full((20, 20, 4), 200, np.uint8), "RGBA").save(src / "rgba.png")
    assert read_images(src, 32).shape == (2, 3, 32, 32)

    out = tmp_path / "col.png"
    code, stdout, err = invoke(["colorize", colour_runs["cage"], "--input", src, "--n", 3, "--out", out], capsys)
    assert code == 0, err
    assert Image.open(out).size == (4 * 34 + 2, 2 * 34 + 2)  # 2 rows of gray + 3 colorizations (32 px, 2 px pad)
    code, _, err = invoke(["colorize", colour_runs["pix2pix"], "--input", src / "gray.png"], capsys)
    assert code == 0, err
    assert list((colour_runs["pix2pix"] / "outputs").glob("colorize-gray-seed0.png"))

    out = tmp_path / "tr.png"
    code, stdout, err = invoke(["transfer", colour_runs["cage"], "--source", src / "rgba.png", "--target",
                                src / "gray.png", "--out", out], capsys)
    assert code == 0 and out.is_file(), err
    code, _, err = invoke(["transfer", colour_runs["pix2pix"], "--source", src / "rgba.png", "--target",
                           src / "gray.png", "--out", tmp_path / "no.png"], capsys)
    assert code == 2 and "cage" in err and err.count("\n") == 1 and not (tmp_path / "no.png").exists()
    code, _, err = invoke(["colorize", colour_runs["cage"], "--input", tmp_path / "missing.png"], capsys)
    assert code == 2 and "no such image" in err
    code, _, err = invoke(["sample", colour_runs["cage"]], capsys)
    assert code == 2 and "colorization model" in err


def test_colorize_refuses_an_unconditional_run(trained_run, tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
    code, _, err = invoke(["colorize", trained_run, "--input", tmp_path / "x.png"], capsys)
    assert code == 2 and "unconditional model (age)" in err


# ---------------------------------------------------------------------------
# metrics on constructed inputs
# ---------------------------------------------------------------------------
class ConstantColour(torch.nn.Module):
    """A 'colorization model' that ignores z: every output has the same ab (normalised)."""

    def __init__(self, ab_n: torch.Tensor):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.ab = ab_n.view(1, 2, 1, 1)
        self.prior = make_model(ModelConfig(latent_dim=3, channels=3, model="pix2pix", width=4)).prior

    @property
    def device(self):
        return self.anchor.device

    def decode(self, z, c):
        return self.ab.expand(len(z), 2, *c.shape[-2:])


def test_pairwise_distance_known_values():
    ab = torch.zeros(2, 3, 2, 4, 4)
    assert pairwise_ab_distance(ab)[0].abs().max() == 0  # identical samples: diversity 0
    ab[:, 1, 0], ab[:, 1, 1] = 3.0, 4.0  # sample 1 differs by (3, 4): Euclidean 5, mean |.| 3.5
    eucl, absd = pairwise_ab_distance(ab)
    # pairs (0,1) and (1,2) differ by 5, pair (0,2) by 0
    assert torch.allclose(eucl, torch.full((2,), 10 / 3)) and torch.allclose(absd, torch.full((2,), 7 / 3))


def test_colorfulness_is_zero_for_gray_and_positive_for_colour():
    gray = torch.rand(3, 1, 16, 16).expand(3, 3, 16, 16)
    assert colorfulness(gray).abs().max() < 1e-4
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    # rg = 255, yb = 127.5, no spread: 0.3 * sqrt(255^2 + 127.5^2)
    assert torch.allclose(colorfulness(red), torch.tensor([0.3 * (255**2 + 127.5**2) ** 0.5]), rtol=1e-5)


def test_evaluate_colorization_on_a_model_that_ignores_z():
    colour = torch.tensor([200, 30, 40], dtype=torch.uint8).view(1, 3, 1, 1).expand(6, 3, 16, 16).clone()
    _, ab_true = uint8_to_lab(colour)
    exact = ConstantColour(ab_true[0, :, 0, 0])
    m = evaluate_colorization(exact, colour, k=4, seed=0)
    assert m["images"] == 6 and m["k"] == 4
    assert m["diversity"] == 0 and m["z_sensitivity"] == 0 and m["mean_abs_ab_difference"] == 0
    assert m["l1_best"] < 1e-3 and m["l1_mean_of_k"] < 1e-3 and m["psnr_best"] > 60
    assert m["colorfulness"] == pytest.approx(m["colorfulness_true"], rel=1e-3)

    grey_model = ConstantColour(torch.zeros(2))  # predicts gray for a coloured truth
    m = evaluate_colorization(grey_model, colour, k=4, seed=0)
    assert m["colorfulness"] < 0.01 and m["diversity"] == 0  # ab = 0 is gray up to float error
    assert m["l1_best"] == pytest.approx((ab_true[0, :, 0, 0].abs() * AB_SCALE).mean().item(), rel=1e-3)


def test_evaluate_colorization_on_tiny_models_is_seeded_and_sees_z():
    for kind in ("cage", "pix2pix"):
        model = tiny(kind)
        images = rgb_u8(5, 32)
        a, b = evaluate_colorization(model, images, k=3, seed=0), evaluate_colorization(model, images, k=3, seed=0)
        assert a == b and model.training  # same numbers; the model's mode is restored
        assert a["diversity"] > 0 and a["z_sensitivity"] > 0
        assert a["l1_best"] <= a["l1_sample"] and a["psnr_best"] >= a["psnr_sample"]


def test_colorization_report_compares_any_labelled_runs(colour_runs, tmp_path, capsys):
    """scripts/colorization_report.py: every labelled run scored on the same held-out images, one column each."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "colorization_report.py"
    spec = importlib.util.spec_from_file_location("colorization_report", path)
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    out = tmp_path / "m.json"
    argv = ["--run", f"first={colour_runs['cage']}", "--pix2pix", str(colour_runs["pix2pix"]),
            "--run", f"again={colour_runs['cage']}", "--k", "3", "--json", str(out), "--fig-dir", str(tmp_path)]
    assert report.main(argv) == 0
    result = json.loads(out.read_text())
    assert list(result["runs"]) == ["pix2pix", "first", "again"] and result["images"] == 4
    assert result["runs"]["first"]["metrics"] == result["runs"]["again"]["metrics"]  # same run, same seeds
    assert result["runs"]["pix2pix"]["metrics"] != result["runs"]["first"]["metrics"]
    assert "| metric | pix2pix | first | again |" in capsys.readouterr().out
    assert (tmp_path / "cars-colorizations.png").is_file() and (tmp_path / "cars-transfer.png").is_file()
    with pytest.raises(SystemExit):  # a label twice
        report.main(["--run", f"a={colour_runs['cage']}", "--run", f"a={colour_runs['pix2pix']}"])
