"""Bad input thrown at the CLI and the Python API (issue 8).

CLI: exit code 2, exactly one line on stderr starting with 'agelab', no
traceback, and every file that existed before is still there, byte for byte
(and nothing new appears unless the case is a run that failed mid-way).
API: the documented exception class (ConfigError, DatasetError,
CheckpointError, ValueError) with a message that names the problem.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import agelab
from agelab import checkpoint as ckpt
from agelab.checkpoint import CheckpointError, list_checkpoints, sha256_file
from agelab.config import ConfigError, TrainConfig
from agelab.data import DatasetError, load_dataset
from agelab.data.sources import load_image_folder
from agelab.runs import read_status
from agelab.trainer import train
from conftest import invoke, run_dirs, tiny_config

TINY = ["--width", "4", "--latent-dim", "4", "--batch-size", "8", "--iterations", "4", "--log-every", "2",
        "--ckpt-every", "2", "--sample-every", "100", "--no-progress"]
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")


# ---------------------------------------------------------------------------
# the playground every case gets
# ---------------------------------------------------------------------------
@dataclass
class Ctx:
    tmp: Path
    run: Path  # a private copy of a finished 4-iteration run (checkpoints 2 and 4)
    unwritable: Path  # a folder path in which nothing can be created

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def zero(self, name: str = "zero-bytes") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return path

    def text(self) -> Path:
        path = self.tmp / "notes.txt"
        path.write_text("not a run, not a dataset\n")
        return path

    def empty_dir(self) -> Path:
        path = self.tmp / "empty"
        path.mkdir(exist_ok=True)
        return path

    def zero_files(self, *names: str) -> Path:
        root = self.tmp / "zero-data"
        for name in names:
            self.zero(f"zero-data/{name}")
        return root

    def newest(self) -> Path:
        return self.run / "checkpoints" / "step-0000004"


def rewrite_manifest(path: Path) -> None:
    """Recompute the checksums, so that only the loaders' own checks stand in the way."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(path / name) for name in manifest["files"]}
    (path / "manifest.json").write_text(json.dumps(manifest))


class Payload:
    """A pickled object whose unpickling would run code (creates a marker file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def damage_all(run: Path, how: Callable[[Path], None]) -> Path:
    for c in list_checkpoints(run / "checkpoints"):
        how(c)
        rewrite_manifest(c)
    return run


def set_config(run: Path, text: str) -> Path:
    (run / "config.json").write_text(text)
    return run


def config_with(run: Path, **changes) -> Path:
    cfg = json.loads((run / "config.json").read_text())
    return set_config(run, json.dumps(dict(cfg, **changes)))


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """chmod 0o500 where that stops writes; as root (tests often run so) it does not, so use a path
    under a regular file, where every mkdir/open fails with NotADirectoryError."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        (locked / "probe").write_text("x")
    except PermissionError:
        yield locked
        locked.chmod(0o700)
        return
    (locked / "probe").unlink()
    locked.chmod(0o700)
    locked.rmdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    yield blocker / "sub"


@pytest.fixture
def ctx(tmp_path, run_copy, unwritable, monkeypatch) -> Ctx:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a stray default output would show up in the snapshot
    return Ctx(tmp_path, run_copy, unwritable)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail_on_call(n: int, real):
    """A stand-in for ``real`` that raises ENOSPC on its n-th call (1-based)."""
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            _enospc()
        return real(*args, **kwargs)

    return wrapper


@dataclass
class Case:
    argv: Callable[[Ctx], list]
    patch: Callable | None = None  # patch(monkeypatch) before the call
    creates: bool = False  # a run that fails mid-way may leave its new run folder


NEW = ["--out-dir", "{out}", "--no-progress"]


def train_with(*options) -> Case:
    return Case(lambda c: ["train", *TINY, *options, *NEW])


CLI_CASES = {
    # bad option values: non-numbers, negatives, NaN/inf, zero, out of range
    "iterations-abc": train_with("--iterations", "abc"),
    "iterations-negative": train_with("--iterations", "-5"),
    "iterations-zero": train_with("--iterations", "0"),
    "iterations-float": train_with("--iterations", "1.5"),
    "iterations-nan": train_with("--iterations", "nan"),
    "lr-nan": train_with("--lr", "nan"),
    "lr-inf": train_with("--lr", "inf"),
    "lr-minus-inf": train_with("--lr=-inf"),
    "lr-negative": train_with("--lr", "-1"),
    "lr-zero": train_with("--lr", "0"),
    "lr-overflow": train_with("--lr", "1e400"),
    "lr-abc": train_with("--lr", "abc"),
    "batch-size-zero": train_with("--batch-size", "0"),
    "batch-size-one": train_with("--batch-size", "1"),
    "batch-size-negative": train_with("--batch-size", "-8"),
    "width-zero": train_with("--width", "0"),
    "latent-dim-negative": train_with("--latent-dim", "-4"),
    "beta1-one": train_with("--beta1", "1"),
    "beta2-nan": train_with("--beta2", "nan"),
    "mu-inf": train_with("--mu", "inf"),
    "lam-negative": train_with("--lam=-1"),
    "seed-negative": train_with("--seed", "-1"),
    "seed-huge": train_with("--seed", "99999999999999999999999"),
    "threads-huge": train_with("--threads", "99999"),
    "threads-negative": train_with("--threads", "-1"),
    "max-rollbacks-negative": train_with("--max-rollbacks", "-1"),
    "max-rollbacks-abc": train_with("--max-rollbacks", "x"),
    "keep-ckpts-zero": train_with("--keep-ckpts", "0"),
    "log-every-zero": train_with("--log-every", "0"),
    "ckpt-every-negative": train_with("--ckpt-every", "-1"),
    "knn-k-zero": train_with("--knn-k", "0"),
    "n-gen-steps-zero": train_with("--n-gen-steps", "0"),
    "tag-empty": train_with("--tag", ""),
    "tag-path": train_with("--tag", "../escape"),
    "device-meta": train_with("--device", "meta"),
    # wrong image sizes
    "image-size-zero": train_with("--image-size", "0"),
    "image-size-48": train_with("--image-size", "48"),
    "image-size-4096": train_with("--image-size", "4096"),
    "image-size-exponent": train_with("--image-size", "1e9"),
    # unknown names
    "unknown-dataset": train_with("--dataset", "imagenet21k"),
    "unknown-prior": train_with("--prior", "uniform"),
    "unknown-divergence": train_with("--divergence", "mmd"),
    "unknown-preset": train_with("--preset", "cifar"),
    "unknown-subcommand": Case(lambda c: ["frobnicate", "--n", "3"]),
    "unknown-option": train_with("--frobnicate"),
    "no-subcommand": Case(lambda c: []),
    # zero-byte and wrong files as datasets
    "mnist-zero-byte-files": Case(lambda c: ["train", *TINY, "--dataset", "mnist", "--data-root",
                                             c.zero_files(*MNIST_FILES), *NEW]),
    "mnist-root-is-a-zero-byte-file": Case(lambda c: ["train", *TINY, "--dataset", "mnist", "--data-root",
                                                      c.zero(), *NEW]),
    "fashion-mnist-zero-byte-files": Case(lambda c: [
        "train", *TINY, "--dataset", "fashion-mnist", "--no-download",
        "--data-root", c.zero_files(*(f"fashion-mnist/{n}" for n in MNIST_FILES)), *NEW]),
    "cifar10-zero-byte-archive": Case(lambda c: ["train", *TINY, "--dataset", "cifar10", "--no-download", "--data-root",
                                                 c.zero_files("cifar10/cifar-10-python.tar.gz"), *NEW]),
    "svhn-zero-byte-mat": Case(lambda c: ["train", *TINY, "--dataset", "svhn", "--no-download", "--data-root",
                                          c.zero_files("svhn/train_32x32.mat", "svhn/test_32x32.mat"), *NEW]),
    "reconstruct-mnist-zero-byte-files": Case(lambda c: ["reconstruct", c.run, "--dataset", "mnist", "--data-root",
                                                         c.zero_files(*MNIST_FILES), "--out", c.tmp / "r.png"]),
    # zero-byte, text and damaged files as RUN
    "sample-zero-byte-run": Case(lambda c: ["sample", c.zero()]),
    "sample-text-file-run": Case(lambda c: ["sample", c.text()]),
    "reconstruct-zero-byte-run": Case(lambda c: ["reconstruct", c.zero()]),
    "interpolate-empty-folder-run": Case(lambda c: ["interpolate", c.empty_dir()]),
    "resume-zero-byte-run": Case(lambda c: ["train", "--resume", c.zero(), "--no-progress"]),
    "resume-empty-folder": Case(lambda c: ["train", "--resume", c.empty_dir(), "--no-progress"]),
    "resume-garbage-config": Case(lambda c: ["train", "--resume", set_config(c.run, "{not json"), "--no-progress"]),
    "resume-empty-config": Case(lambda c: ["train", "--resume", set_config(c.run, ""), "--no-progress"]),
    "resume-config-wrong-type": Case(lambda c: ["train", "--resume", config_with(c.run, width="abc"), "--no-progress"]),
    "resume-config-invalid-value": Case(lambda c: ["train", "--resume", config_with(c.run, lr=-1.0), "--no-progress"]),
    "resume-pickle-payload": Case(lambda c: ["train", "--resume", damage_all(c.run, lambda p: torch.save(
        {"step": 4, "optimizers": {}, "rng": {}, "payload": Payload(str(c.tmp / "pwned"))}, p / "state.pt")),
        "--iterations", "6", "--no-progress"]),
    "resume-state-missing-keys": Case(lambda c: ["train", "--resume", damage_all(
        c.run, lambda p: torch.save({"step": "four"}, p / "state.pt")), "--iterations", "6", "--no-progress"]),
    "sample-garbage-weights": Case(lambda c: ["sample", damage_all(
        c.run, lambda p: (p / "model.safetensors").write_bytes(b"\x08" + b"\0" * 20)), "--out", c.tmp / "s.png"]),
    "sample-garbage-model-json": Case(lambda c: ["sample", damage_all(
        c.run, lambda p: (p / "model.json").write_text("[1, 2")), "--out", c.tmp / "s.png"]),
    "reconstruct-garbage-config": Case(lambda c: ["reconstruct", set_config(c.run, "\xff{"), "--out", c.tmp / "r.png"]),
    # model commands: bad values
    "sample-n-abc": Case(lambda c: ["sample", c.run, "--n", "abc"]),
    "sample-n-negative": Case(lambda c: ["sample", c.run, "--n", "-3"]),
    "sample-nrow-zero": Case(lambda c: ["sample", c.run, "--nrow", "0"]),
    "sample-seed-negative": Case(lambda c: ["sample", c.run, "--seed", "-1"]),
    "sample-seed-huge": Case(lambda c: ["sample", c.run, "--seed", str(2**70)]),
    "sample-device-meta": Case(lambda c: ["sample", c.run, "--device", "meta"]),
    "sample-out-not-png": Case(lambda c: ["sample", c.run, "--out", c.tmp / "samples.txt"]),
    "sample-out-is-a-folder": Case(lambda c: ["sample", c.run, "--out", c.empty_dir()]),
    "sample-out-missing-folder": Case(lambda c: ["sample", c.run, "--out", c.tmp / "no" / "such" / "s.png"]),
    "sample-npz-under-a-file": Case(lambda c: ["sample", c.run, "--out", c.tmp / "s.png", "--npz", c.text() / "s.npz"]),
    "interpolate-steps-zero": Case(lambda c: ["interpolate", c.run, "--steps", "0"]),
    "interpolate-pairs-abc": Case(lambda c: ["interpolate", c.run, "--pairs", "abc"]),
    "reconstruct-split-val": Case(lambda c: ["reconstruct", c.run, "--split", "val"]),
    "reconstruct-unknown-dataset": Case(lambda c: ["reconstruct", c.run, "--dataset", "imagenet21k"]),
    # unwritable outputs
    "train-out-dir-unwritable": Case(lambda c: ["train", *TINY, "--out-dir", c.unwritable / "runs", "--no-progress"]),
    "train-out-dir-is-a-file": Case(lambda c: ["train", *TINY, "--out-dir", c.text(), "--no-progress"]),
    "sample-out-unwritable": Case(lambda c: ["sample", c.run, "--out", c.unwritable / "s.png"]),
    # a full disk
    "train-disk-full-at-2nd-checkpoint": Case(
        lambda c: ["train", *TINY, *NEW],
        patch=lambda mp: mp.setattr(ckpt, "save_file", _fail_on_call(2, ckpt.save_file)), creates=True),
    "train-disk-full-at-rename": Case(
        lambda c: ["train", *TINY, *NEW],
        patch=lambda mp: mp.setattr(ckpt.os, "rename", _fail_on_call(2, os.rename)), creates=True),
    "sample-disk-full": Case(lambda c: ["sample", c.run, "--out", c.tmp / "s.png"],
                             patch=lambda mp: mp.setattr(Image.Image, "save", _enospc)),
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_bad_input_is_one_line_exit_2_and_loses_nothing(name, ctx, capsys, monkeypatch):
    case = CLI_CASES[name]
    argv = [str(a).replace("{out}", str(ctx.out)) for a in case.argv(ctx)]
    before = snapshot(ctx.tmp)
    if case.patch is not None:
        case.patch(monkeypatch)

    code, stdout, err = invoke(argv, capsys)
    monkeypatch.undo()

    assert "Traceback" not in err, err
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agelab") and "error" in lines[0], err
    after = snapshot(ctx.tmp)
    changed = [k for k, digest in before.items() if after.get(k) != digest]
    assert not changed, f"lost or overwritten: {changed}"
    if not case.creates:
        assert sorted(set(after) - set(before)) == [], "new files appeared"
    assert not (ctx.tmp / "pwned").exists()
    for c in list(ctx.out.glob("*/checkpoints")) + [ctx.run / "checkpoints"]:
        assert not any(p.name.startswith(".tmp-") for p in c.iterdir()), "temporary checkpoint left behind"


def test_full_disk_keeps_the_previous_checkpoint(ctx, capsys, monkeypatch):
    monkeypatch.setattr(ckpt, "save_file", _fail_on_call(2, ckpt.save_file))  # step 0 saves, step 2 hits ENOSPC
    code, _, err = invoke(["train", *TINY, *[a.replace("{out}", str(ctx.out)) for a in NEW]], capsys)
    assert code == 2 and "No space left on device" in err
    (run,) = run_dirs(ctx.out)
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-0000000"]
    ckpt.verify_checkpoint(run / "checkpoints" / "step-0000000")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000000"]
    assert read_status(run)["state"] == "failed"
    monkeypatch.undo()  # space again: the run resumes from what survived
    assert invoke(["train", "--resume", run, "--no-progress"], capsys)[0] == 0
    assert read_status(run)["state"] == "finished"


@pytest.mark.parametrize("target", ["save_file", "torch.save", "rename", "fsync"])
def test_checkpoint_write_failure_leaves_the_previous_checkpoint_and_no_temporaries(tmp_path, trained_run,
                                                                                   monkeypatch, target):
    root = tmp_path / "checkpoints"
    shutil.copytree(trained_run / "checkpoints", root)
    before = snapshot(root)
    model = agelab.load(trained_run)
    patches = {"save_file": (ckpt, "save_file"), "torch.save": (ckpt.torch, "save"), "rename": (ckpt.os, "rename"),
               "fsync": (ckpt.os, "fsync")}
    monkeypatch.setattr(*patches[target], _enospc)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_checkpoint(root, 6, model, model.cfg.to_dict(), {"step": 6}, keep=2)
    assert snapshot(root) == before
    assert sorted(p.name for p in root.iterdir()) == ["step-0000002", "step-0000004"]


SUBPROCESS_CASES = [
    ["train", "--iterations", "nan"],
    ["train", "--dataset", "imagenet21k"],
    ["train", "--lr", "inf", "--out-dir", "runs"],
    ["sample", "zero-bytes"],
    ["train", "--resume", "zero-bytes"],
    ["frobnicate"],
]


def test_cli_bad_input_through_python_dash_m(tmp_path):
    (tmp_path / "zero-bytes").write_bytes(b"")
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("AGELAB_DATA", None)
    procs = [subprocess.Popen([sys.executable, "-m", "agelab", *argv], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv in SUBPROCESS_CASES]
    for argv, proc in zip(SUBPROCESS_CASES, procs):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("agelab") and "Traceback" not in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zero-bytes"]


# ---------------------------------------------------------------------------
# the Python API
# ---------------------------------------------------------------------------
BAD_CONFIGS = [
    ({"lr": float("nan")}, "--lr"), ({"lr": float("inf")}, "--lr"), ({"lr": -1.0}, "--lr"),
    ({"batch_size": 0}, "--batch-size"), ({"iterations": -1}, "--iterations"), ({"width": 0}, "--width"),
    ({"image_size": 48}, "--image-size"), ({"image_size": 0}, "--image-size"),
    ({"dataset": "imagenet21k"}, "--dataset"),
    ({"prior": "uniform"}, "--prior"), ({"divergence": "mmd"}, "--divergence"), ({"tag": "a/b"}, "--tag"),
    ({"seed": -1}, "--seed"), ({"seed": 2**40}, "--seed"), ({"threads": 5000}, "--threads"),
    ({"max_rollbacks": -1}, "--max-rollbacks"), ({"keep_ckpts": 0}, "--keep-ckpts"), ({"beta1": 1.0}, "--beta1"),
    ({"device": "tpu"}, "--device"), ({"mu": float("inf")}, "--mu"),
]


@pytest.mark.parametrize("change,option", BAD_CONFIGS, ids=[f"{next(iter(c))}={next(iter(c.values()))}"
                                                           for c, _ in BAD_CONFIGS])
def test_train_api_rejects_bad_config_values(tmp_path, change, option):
    cfg = TrainConfig(**dict(tiny_config(tmp_path / "runs").to_dict(), **change))
    with pytest.raises(ConfigError, match=option):
        train(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with a tiny IDAT: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def image_folder(tmp: Path, name: str, data: bytes | None) -> Path:
    folder = tmp / "images"
    folder.mkdir()
    Image.new("L", (12, 12), 100).save(folder / "good.png")
    if data is not None:
        (folder / name).write_bytes(data)
    return folder


def dangling_link_folder(tmp: Path) -> Path:
    """A folder of one good image and a symbolic link to a file that does not exist."""
    folder = image_folder(tmp, "unused.txt", None)
    (folder / "broken.png").symlink_to(tmp / "gone.png")
    return folder


def _run_with(ctx: Ctx, how) -> Path:
    return damage_all(ctx.run, how)


API_CASES = {
    # agelab.load
    "load-missing": (lambda c: agelab.load(c.tmp / "missing"), CheckpointError, "no such run folder"),
    "load-zero-byte-file": (lambda c: agelab.load(c.zero()), CheckpointError, "no valid checkpoint"),
    "load-empty-folder": (lambda c: agelab.load(c.empty_dir()), CheckpointError, "no valid checkpoint"),
    "load-garbage-weights": (lambda c: agelab.load(_run_with(
        c, lambda p: (p / "model.safetensors").write_bytes(b"{}"))), CheckpointError, "unreadable model.safetensors"),
    "load-garbage-model-json": (lambda c: agelab.load(_run_with(c, lambda p: (p / "model.json").write_text("{"))),
                                CheckpointError, "unreadable model.json"),
    "load-bad-device": (lambda c: agelab.load(c.run, device="nonsense"), ConfigError, "--device"),
    # trainer.train
    "train-nothing": (lambda c: train(progress=False), ValueError, "needs a config"),
    "train-resume-zero-byte": (lambda c: train(resume=c.zero(), progress=False), CheckpointError, "not a run folder"),
    "train-resume-garbage-config": (lambda c: train(resume=set_config(c.run, "[1, 2]"), progress=False),
                                    CheckpointError, "config.json: not a valid run config"),
    "train-resume-changed-option": (lambda c: train(resume=c.run, overrides={"lam": 5.0}, progress=False),
                                    ConfigError, "--lam"),
    "train-resume-pickle": (lambda c: train(resume=_run_with(c, lambda p: torch.save(
        {"step": 4, "payload": Payload(str(c.tmp / "pwned"))}, p / "state.pt")), progress=False),
        CheckpointError, "refusing to load state.pt"),
    "train-mnist-zero-byte-files": (lambda c: train(tiny_config(
        c.out, dataset="mnist", data_root=str(c.zero_files(*MNIST_FILES))), progress=False),
        DatasetError, "not an IDX file"),
    # load_dataset
    "dataset-unknown": (lambda c: load_dataset("imagenet21k"), DatasetError, "unknown dataset"),
    "dataset-bad-split": (lambda c: load_dataset("digits", "val"), ValueError, "split"),
    "dataset-size-zero": (lambda c: load_dataset("digits", "train", 0), ValueError, "image_size"),
    "dataset-size-negative": (lambda c: load_dataset("digits", "train", -32), ValueError, "image_size"),
    "dataset-mnist-missing": (lambda c: load_dataset("mnist", data_root=str(c.empty_dir())), DatasetError, "missing"),
    "dataset-mnist-zero-bytes": (lambda c: load_dataset("mnist", data_root=str(c.zero_files(*MNIST_FILES))),
                                 DatasetError, "too short"),
    "dataset-cifar10-zero-bytes": (lambda c: load_dataset("cifar10", data_root=str(c.zero_files(
        "cifar10/cifar-10-python.tar.gz"))), DatasetError, "empty file"),
    "dataset-svhn-zero-bytes": (lambda c: load_dataset("svhn", data_root=str(c.zero_files("svhn/train_32x32.mat"))),
                                DatasetError, "SVHN"),
    # image folders
    "folder-text-named-png": (lambda c: load_image_folder(image_folder(c.tmp, "bad.png", b"hello, I am text"), 16,
                                                          strict=True), DatasetError, "bad.png"),
    "folder-zero-byte-png": (lambda c: load_image_folder(image_folder(c.tmp, "bad.png", b""), 16, strict=True),
                             DatasetError, "bad.png"),
    "folder-decompression-bomb": (lambda c: load_image_folder(image_folder(
        c.tmp, "bomb.png", _png_header(100000, 100000)), 16, strict=True), DatasetError, "bomb.png.*DecompressionBomb"),
    "folder-dangling-symlink": (lambda c: load_image_folder(dangling_link_folder(c.tmp), 16, strict=True),
                                DatasetError, "broken.png.*dangling symbolic link"),
    "folder-size-zero": (lambda c: load_image_folder(image_folder(c.tmp, "x.png", None), 0), ValueError, "size"),
    "folder-missing": (lambda c: load_image_folder(c.tmp / "missing", 16), DatasetError, "does not exist"),
    "folder-is-a-zero-byte-file": (lambda c: load_image_folder(c.zero(), 16), DatasetError, "not a folder"),
    "folder-no-images": (lambda c: load_image_folder(c.zero("no-images/readme.txt").parent, 16), DatasetError,
                         "no image files"),
}


@pytest.mark.parametrize("name", sorted(API_CASES))
def test_api_bad_input_raises_the_documented_error(name, ctx):
    call, error, message = API_CASES[name]
    with pytest.raises(error, match=message) as info:
        call(ctx)
    assert "\n" not in str(info.value), "one line"
    assert not (ctx.tmp / "pwned").exists()
    assert run_dirs(ctx.out) == []


def test_decompression_bomb_is_skipped_with_a_warning_when_not_strict(tmp_path):
    folder = image_folder(tmp_path, "bomb.png", _png_header(100000, 100000))
    with pytest.warns(UserWarning, match="skipped 1 unreadable.*bomb.png.*DecompressionBomb"):
        data = load_image_folder(folder, 16)
    assert data.images.shape == (1, 1, 16, 16)


def test_dangling_symlink_is_skipped_with_a_warning_when_not_strict(tmp_path, capsys):
    folder = dangling_link_folder(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 unreadable image file.*of 2.*broken.png.*dangling symbolic link"):
        data = load_image_folder(folder, 16)
    assert data.images.shape == (1, 1, 16, 16)
    # `agelab train` on such a tree: the same counted warning as one line, then the usual errors for too few images
    code, _, err = invoke(["train", "--dataset", "folder", "--data-root", folder, "--out-dir", tmp_path / "runs",
                           "--no-progress", "--no-cache"], capsys)
    assert "agelab train: warning: skipped 1 unreadable image file(s) of 2" in err and "dangling" in err
    assert code == 2 and "[Errno 2]" not in err


@pytest.mark.parametrize("kind", ["16-bit-png", "cmyk-jpeg", "cmyk-tiff"])
def test_16_bit_and_cmyk_images_are_read_not_refused(tmp_path, kind):
    folder = tmp_path / "images"
    folder.mkdir()
    if kind == "16-bit-png":
        Image.fromarray(np.full((12, 12), 257 * 200, np.uint16)).save(folder / "x.png")
        expected, channels = 200, 1
    else:
        ext = "jpg" if kind == "cmyk-jpeg" else "tif"
        Image.new("CMYK", (12, 12), (0, 0, 0, 0)).save(folder / f"x.{ext}")  # no ink: white
        expected, channels = 255, 3
    data = load_image_folder(folder, 8, strict=True)
    assert data.images.shape == (1, channels, 8, 8)
    assert (data.images.int() - expected).abs().max() <= 1


def test_load_refuses_a_device_that_cannot_compute(trained_run):
    from agelab.config import ConfigError

    with pytest.raises(ConfigError, match="--device"):
        agelab.load(trained_run, device="meta")
