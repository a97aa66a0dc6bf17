"""The ``agelab`` command line, in-process (``agelab.cli.main``) and once through ``python -m agelab``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agelab.checkpoint import list_checkpoints
from agelab.config import config_fields
from agelab.runs import read_metrics, read_status
from conftest import fake_mnist_arrays, flip_byte, idx_bytes, invoke, run_dirs, write_idx_gz

TINY_ARGS = ["--width", "4", "--latent-dim", "4", "--batch-size", "8", "--iterations", "4", "--log-every", "2",
             "--sample-every", "2", "--ckpt-every", "2", "--no-progress"]


def grid_size(n: int, nrow: int, side: int = 32, pad: int = 2) -> tuple[int, int]:
    """(width, height) of a PNG grid written by agelab.sampling.save_grid."""
    cols = min(nrow, n)
    rows = -(-n // cols)
    return cols * (side + pad) + pad, rows * (side + pad) + pad


@pytest.fixture
def in_tmp_cwd(tmp_path, monkeypatch) -> Path:
    """Run from an empty working directory so that a stray default ``runs/`` would be noticed."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------
def test_train_writes_a_complete_run_folder(tmp_path, capsys, in_tmp_cwd):
    out = tmp_path / "runs"
    code, stdout, err = invoke(["train", *TINY_ARGS, "--out-dir", out, "--tag", "cli"], capsys)
    assert code == 0, err
    (run,) = run_dirs(out)
    assert run.name == "00000-digits-cli"
    assert f"run folder: {run}" in stdout
    for name in ("config.json", "metrics.jsonl", "samples.png", "reconstructions.png", "interpolations.png",
                 "report.html", "summary.json", "status.json", "curves.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert (config["width"], config["latent_dim"], config["iterations"], config["dataset"]) == (4, 4, 4, "digits")
    status = read_status(run)
    assert status["state"] == "finished" and status["step"] == 4
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-0000002", "step-0000004"]
    assert [r["step"] for r in read_metrics(run)] == [2, 4]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 4 and summary["test_images"] == 299
    assert set(summary["test_reconstruction"]) == {"l1", "mse", "psnr"}
    for name in ("samples.png", "reconstructions.png", "interpolations.png"):
        assert Image.open(run / name).size == grid_size(64, 8)
    assert sorted(p.name for p in (run / "grids").iterdir()) == [
        "recon-0000002.png", "recon-0000004.png", "samples-0000002.png", "samples-0000004.png"]
    report = (run / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 4 and "test reconstruction psnr" in report
    assert list(in_tmp_cwd.iterdir()) == []


def test_train_resume_continues_the_run(run_copy, capsys):
    code, stdout, err = invoke(["train", "--resume", run_copy, "--iterations", "6", "--no-progress"], capsys)
    assert code == 0, err
    assert read_status(run_copy)["step"] == 6 and read_status(run_copy)["state"] == "finished"
    assert [r["step"] for r in read_metrics(run_copy)] == [2, 4, 6]


def test_train_via_python_dash_m(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("AGELAB_DATA", None)
    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "agelab", "train", *TINY_ARGS, "--iterations", "2", "--threads", "1",
                           "--out-dir", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run,) = run_dirs(out)
    assert read_status(run)["state"] == "finished"
    assert (run / "report.html").is_file() and (run / "samples.png").is_file()

    bad = subprocess.run([sys.executable, "-m", "agelab", "train", "--image-size", "48", "--out-dir", str(out)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.startswith("agelab") and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr and "--image-size" in bad.stderr
    assert run_dirs(out) == [run]


# ---------------------------------------------------------------------------
# sample / reconstruct / interpolate
# ---------------------------------------------------------------------------
def test_sample_writes_png_and_npz(trained_run, tmp_path, capsys):
    png, npz = tmp_path / "s.png", tmp_path / "s.npz"
    code, stdout, err = invoke(["sample", trained_run, "--n", "10", "--nrow", "5", "--out", png, "--npz", npz], capsys)
    assert code == 0, err
    assert Image.open(png).size == grid_size(10, 5)
    samples = np.load(npz)["samples"]
    assert samples.shape == (10, 1, 32, 32) and samples.dtype == np.uint8
    assert f"wrote {png}" in stdout and f"wrote {npz}" in stdout
    # the grid holds exactly these samples: first tile of the PNG is sample 0
    grid = np.asarray(Image.open(png))
    assert np.array_equal(grid[2:34, 2:34], samples[0, 0])

    # the npz holds the loaded model's seeded samples g(z), z ~ prior(seed)
    import agelab
    from agelab.data import to_uint8
    from agelab.sampling import sample_images

    model = agelab.load(trained_run)
    assert np.array_equal(to_uint8(sample_images(model, 10, seed=0)).numpy(), samples)
    again = tmp_path / "again.npz"
    assert invoke(["sample", trained_run, "--n", "10", "--out", tmp_path / "a.png", "--npz", again], capsys)[0] == 0
    assert np.array_equal(np.load(again)["samples"], samples)
    other = tmp_path / "other.npz"
    assert invoke(["sample", trained_run, "--n", "10", "--seed", "1", "--out", tmp_path / "b.png", "--npz", other],
                  capsys)[0] == 0
    assert np.array_equal(to_uint8(sample_images(model, 10, seed=1)).numpy(), np.load(other)["samples"])
    assert not sample_images(model, 10, seed=1).equal(sample_images(model, 10, seed=0))


def test_sample_many_writes_a_bounded_grid_and_every_sample_to_the_npz(trained_run, tmp_path, capsys):
    from agelab.cli import GRID_MAX

    png, npz = tmp_path / "s.png", tmp_path / "s.npz"
    n = GRID_MAX + 44
    code, stdout, err = invoke(["sample", trained_run, "--n", n, "--nrow", 16, "--out", png, "--npz", npz], capsys)
    assert code == 0, err
    assert Image.open(png).size == grid_size(GRID_MAX, 16)
    assert np.load(npz)["samples"].shape == (n, 1, 32, 32)
    assert f"the first {GRID_MAX} of {n} samples" in stdout


def test_sample_default_output_goes_to_run_outputs(run_copy, capsys):
    code, stdout, err = invoke(["sample", run_copy / "checkpoints" / "step-0000002", "--n", "4"], capsys)
    assert code == 0, err
    out = run_copy / "outputs" / "samples-seed0.png"
    assert out.is_file() and Image.open(out).size == grid_size(4, 8)


def test_reconstruct_prints_errors_matching_the_run_summary(trained_run, tmp_path, capsys):
    png = tmp_path / "rec.png"
    code, stdout, err = invoke(["reconstruct", trained_run, "--n", "6", "--nrow", "4", "--out", png], capsys)
    assert code == 0, err
    assert Image.open(png).size == grid_size(12, 4)
    m = re.search(r"test split, (\d+) images: L1 ([\d.]+)\s+MSE ([\d.]+) .*PSNR ([\d.]+) dB", stdout)
    assert m, stdout
    n, l1, mse, psnr = int(m[1]), float(m[2]), float(m[3]), float(m[4])
    summary = json.loads((trained_run / "summary.json").read_text())["test_reconstruction"]
    assert n == 299
    assert l1 == pytest.approx(summary["l1"], abs=1e-4) and mse == pytest.approx(summary["mse"], abs=1e-4)
    assert psnr == pytest.approx(summary["psnr"], abs=0.01)
    assert 0 < l1 <= 2 and 0 < mse <= 4


def test_checkpoint_outside_a_run_needs_dataset(trained_run, tmp_path, capsys, in_tmp_cwd):
    loose = tmp_path / "loose-checkpoint"
    shutil.copytree(trained_run / "checkpoints" / "step-0000004", loose)
    code, _, err = invoke(["reconstruct", loose], capsys)
    assert code == 2 and "--dataset" in err and "Traceback" not in err
    code, stdout, err = invoke(["reconstruct", loose, "--dataset", "digits", "--split", "train", "--n", "2"], capsys)
    assert code == 0, err
    assert "train split, 1498 images" in stdout
    assert (in_tmp_cwd / "reconstructions-train.png").is_file()  # no run folder: written to the working dir


def test_interpolate_writes_one_row_per_pair(trained_run, tmp_path, capsys):
    png = tmp_path / "interp.png"
    code, stdout, err = invoke(["interpolate", trained_run, "--pairs", "3", "--steps", "5", "--out", png], capsys)
    assert code == 0, err
    assert Image.open(png).size == grid_size(15, 5)
    assert "3 pairs x 5 steps" in stdout


# ---------------------------------------------------------------------------
# user errors: exit code 2, one line on stderr, no traceback, no run folder
# ---------------------------------------------------------------------------
def _corrupt_all(run: Path) -> Path:
    for p in list_checkpoints(run / "checkpoints"):
        flip_byte(p / "model.safetensors")
    return run


def _truncated_mnist(tmp: Path) -> Path:
    root = tmp / "bad-mnist"
    images, labels = fake_mnist_arrays(16, 0)
    write_idx_gz(root / "train-images-idx3-ubyte.gz", idx_bytes(images)[:10])
    write_idx_gz(root / "train-labels-idx1-ubyte.gz", labels)
    write_idx_gz(root / "t10k-images-idx3-ubyte.gz", images)
    write_idx_gz(root / "t10k-labels-idx1-ubyte.gz", labels)
    return root


def _empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir(exist_ok=True)
    return tmp / "empty"


NEW_RUN = ["--out-dir", "{out}", "--no-progress"]
BAD_INPUTS = [
    pytest.param(lambda t, run: ["train", "--dataset", "foo", *NEW_RUN], id="unknown-dataset"),
    pytest.param(lambda t, run: ["train", "--image-size", "48", *NEW_RUN], id="image-size-48"),
    pytest.param(lambda t, run: ["train", "--latent-dim", "1", *NEW_RUN], id="latent-dim-1"),
    pytest.param(lambda t, run: ["train", "--lam=-1", *NEW_RUN], id="negative-lam"),
    pytest.param(lambda t, run: ["train", "--mu", "-1", *NEW_RUN], id="negative-mu"),
    pytest.param(lambda t, run: ["train", "--lr", "nan", *NEW_RUN], id="nan-lr"),
    pytest.param(lambda t, run: ["train", "--preset", "cifar", *NEW_RUN], id="unknown-preset"),
    pytest.param(lambda t, run: ["train", "--iterations", "abc", *NEW_RUN], id="non-integer-iterations"),
    pytest.param(lambda t, run: ["train", "--batch-size", "5000", "--iterations", "1", *NEW_RUN],
                 id="batch-larger-than-dataset"),
    pytest.param(lambda t, run: ["train", "--device", "cuda:7", "--iterations", "1", *NEW_RUN],
                 id="unavailable-device", marks=pytest.mark.skipif(
                     __import__("torch").cuda.device_count() > 7, reason="machine has a cuda:7")),
    pytest.param(lambda t, run: ["train", "--dataset", "mnist", "--data-root", _empty(t), *NEW_RUN],
                 id="missing-mnist"),
    pytest.param(lambda t, run: ["sample", t / "no-such-run"], id="sample-missing-checkpoint"),
    pytest.param(lambda t, run: ["sample", run, "--n", "0"], id="sample-zero-images"),
    pytest.param(lambda t, run: ["train", "--resume", run, "--lam", "5", "--no-progress"], id="resume-changed-option"),
    pytest.param(lambda t, run: ["train", "--resume", run, "--preset", "digits"], id="resume-with-preset"),
    pytest.param(lambda t, run: ["train", "--resume", run, "--recipe", "paper"], id="resume-with-recipe"),
    pytest.param(lambda t, run: ["train", "--recipe", "papr"], id="unknown-recipe"),
    pytest.param(lambda t, run: ["train", "--resume", t / "no-such-run"], id="resume-missing-run"),
    pytest.param(lambda t, run: ["sample", _corrupt_all(run)], id="sample-corrupted-run"),
    pytest.param(lambda t, run: ["reconstruct", _corrupt_all(run)], id="reconstruct-corrupted-run"),
    pytest.param(lambda t, run: ["train", "--resume", _corrupt_all(run), "--iterations", "6", "--no-progress"],
                 id="resume-corrupted-run"),
    pytest.param(lambda t, run: ["reconstruct", run, "--dataset", "foo"], id="reconstruct-unknown-dataset"),
    pytest.param(
        lambda t, run: ["sample", run, "--device", "nonsense"], id="sample-bad-device"),
    pytest.param(
        lambda t, run: ["train", "--divergence", "knn", "--knn-k", "5", "--knn-prior-samples", "2",
                        "--iterations", "1", *NEW_RUN], id="knn-k-above-prior-samples"),
    pytest.param(
        lambda t, run: ["train", "--dataset", "mnist", "--data-root", _truncated_mnist(t), *NEW_RUN],
        id="truncated-mnist-header"),
]


@pytest.mark.parametrize("make_argv", BAD_INPUTS)
def test_user_errors_exit_2_with_one_line(make_argv, tmp_path, run_copy, capsys, in_tmp_cwd):
    out = tmp_path / "out"
    before_run = sorted(p.relative_to(run_copy) for p in run_copy.rglob("*") if "tb" not in p.parts)
    before_metrics = (run_copy / "metrics.jsonl").read_text()
    argv = [str(a).replace("{out}", str(out)) for a in make_argv(tmp_path, run_copy)]

    code, stdout, err = invoke(argv, capsys)

    assert "Traceback" not in err
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agelab"), err
    assert "error" in lines[0]
    assert run_dirs(out) == [], "a run folder was created"
    assert list(in_tmp_cwd.iterdir()) == [], "something was written to the working directory"
    assert run_dirs(run_copy.parent) == [run_copy]
    after_run = sorted(p.relative_to(run_copy) for p in run_copy.rglob("*") if "tb" not in p.parts)
    assert after_run == before_run and (run_copy / "metrics.jsonl").read_text() == before_metrics


def test_resume_error_message_names_the_option(run_copy, capsys):
    code, _, err = invoke(["train", "--resume", run_copy, "--lam", "5"], capsys)
    assert code == 2 and "--lam" in err and "1000" in err


# ---------------------------------------------------------------------------
# help
# ---------------------------------------------------------------------------
MODEL_OPTIONS = ["RUN", "--out", "--seed", "--device"]
HELP_OPTIONS = {
    "train": ["--preset", "--recipe", "--resume", "--no-progress"] + ["--" + f.name.replace("_", "-") for f in config_fields()],
    "sample": MODEL_OPTIONS + ["--n", "--nrow", "--npz"],
    "reconstruct": MODEL_OPTIONS + ["--n", "--nrow", "--split", "--dataset", "--data-root"],
    "interpolate": MODEL_OPTIONS + ["--pairs", "--steps", "--split", "--dataset", "--data-root"],
}


@pytest.mark.parametrize("command", sorted(HELP_OPTIONS))
def test_help_exits_0_and_lists_every_option(command, capsys):
    code, stdout, err = invoke([command, "--help"], capsys)
    assert code == 0 and err == ""
    options_part = stdout.split("\n\n", 1)[1]  # everything after the usage paragraph
    for option in HELP_OPTIONS[command]:
        assert re.search(rf"(^|\s){re.escape(option)}(\s|,|$)", options_part, re.M), f"{option} missing"


def test_train_help_covers_every_config_field_with_its_text(capsys):
    _, stdout, _ = invoke(["train", "--help"], capsys)
    flat = " ".join(stdout.split())
    for f in config_fields():
        first_words = " ".join(f.metadata["help"].split()[:4])
        assert first_words in flat, f.name


def test_top_level_help_and_version(capsys):
    code, stdout, _ = invoke(["--help"], capsys)
    assert code == 0 and all(c in stdout for c in ("train", "sample", "reconstruct", "interpolate"))
    code, stdout, _ = invoke(["--version"], capsys)
    assert code == 0 and stdout.strip() == "agelab 0.1.0"
    code, _, err = invoke([], capsys)
    assert code == 2 and err.startswith("agelab") and "Traceback" not in err


def test_options_on_by_default_can_be_turned_off(tmp_path, capsys):
    """Boolean options whose default is on get a --no-... form (channels-last, malloc tuning)."""
    out = tmp_path / "runs"
    code, _, err = invoke(["train", *TINY_ARGS, "--iterations", "2", "--no-channels-last", "--no-malloc-tuning",
                           "--out-dir", out], capsys)
    assert code == 0, err
    (run,) = run_dirs(out)
    config = json.loads((run / "config.json").read_text())
    assert config["channels_last"] is False and config["malloc_tuning"] is False
    code, _, err = invoke(["train", *TINY_ARGS, "--iterations", "2", "--channels-last", "--out-dir", out], capsys)
    assert code == 0, err
    assert json.loads((run_dirs(out)[-1] / "config.json").read_text())["channels_last"] is True
