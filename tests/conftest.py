"""Shared fixtures for the agelab test suite.

Everything here is sized for a 2-core CPU machine: tiny networks (width 4,
latent 4, batch 8), a handful of iterations, the embedded scikit-learn digits
and hand-made MNIST IDX files written into tmp_path.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from agelab.checkpoint import list_checkpoints, step_dir_name
from agelab.config import TrainConfig
from agelab.cli import main

# One intra-op thread: on a 2-core machine (maybe shared with another training
# process) torch's default of one thread per core oversubscribes the CPU and
# makes these tiny nets 10-20x slower.
torch.set_num_threads(1)


# ---------------------------------------------------------------------------
# environment isolation
# ---------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test may find real datasets in $AGELAB_DATA or the per-user cache."""
    monkeypatch.delenv("AGELAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------
TINY = dict(
    dataset="digits",
    width=4,
    latent_dim=4,
    batch_size=8,
    iterations=4,
    log_every=2,
    sample_every=1000,
    ckpt_every=2,
    keep_ckpts=2,
    device="cpu",
    seed=0,
)


def tiny_config(out_dir, **overrides) -> TrainConfig:
    """A valid TrainConfig for a few-second training run in ``out_dir``."""
    values = dict(TINY, out_dir=str(out_dir))
    values.update(overrides)
    return TrainConfig(**values).validate()


@pytest.fixture
def tiny_cfg(tmp_path):
    """Factory: ``tiny_cfg(**overrides)`` -> TrainConfig writing under tmp_path/runs."""

    def make(**overrides) -> TrainConfig:
        return tiny_config(tmp_path / "runs", **overrides)

    return make


# ---------------------------------------------------------------------------
# a trained run shared by read-only tests (CLI sample/reconstruct/interpolate, loading)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished 4-iteration digits run (checkpoints at steps 2 and 4). Treat as read-only."""
    from agelab.trainer import train

    out = tmp_path_factory.mktemp("shared-run")
    return train(tiny_config(out), progress=False)


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of ``trained_run`` that a test may modify (corrupt, resume, ...)."""
    dst = tmp_path / "copy" / trained_run.name
    shutil.copytree(trained_run, dst)
    return dst


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip every bit of one byte of ``path`` (by default one in the middle)."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the IDX format (magic 0x0000 08 <ndim>, dims as big-endian uint32)."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_gz(path: Path, array_or_bytes) -> Path:
    data = array_or_bytes if isinstance(array_or_bytes, (bytes, bytearray)) else idx_bytes(array_or_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def fake_mnist_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, size=(n, 28, 28), dtype=np.uint8)  # no zeros: padding is recognisable
    labels = (np.arange(n) * 7 + seed) % 10
    return images, labels.astype(np.uint8)


@pytest.fixture
def fake_mnist(tmp_path):
    """Tiny MNIST in the official file layout: 24 train and 8 test images (28x28).

    Returns (folder, {"train": (images, labels), "test": (images, labels)}).
    """
    folder = tmp_path / "mnist-root"
    arrays = {"train": fake_mnist_arrays(24, 1), "test": fake_mnist_arrays(8, 2)}
    names = {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }
    for split, (img_name, lab_name) in names.items():
        images, labels = arrays[split]
        write_idx_gz(folder / img_name, images)
        write_idx_gz(folder / lab_name, labels)
    return folder, arrays


def checkpoint_weights(run_dir: Path, step: int | None = None) -> dict[str, torch.Tensor]:
    """The weights in a run's checkpoint at ``step``, or in its last checkpoint."""
    root = Path(run_dir) / "checkpoints"
    folder = root / step_dir_name(step) if step is not None else list_checkpoints(root)[-1]
    return load_file(str(folder / "model.safetensors"))


# Tolerance of relative_update_error between two code paths that compute the same training on a
# CPU: rounding gives a few 1e-6, a batch out of order 0.1-0.4 (tests/test_equivalence.py says why
# a relative norm and not the largest difference of one element).
UPDATE_RTOL = 5e-3


def relative_update_error(weights: dict, reference: dict, initial: dict) -> float:
    """norm(weights - reference) / norm(reference - initial) over the floating-point tensors of ``initial``.

    Two correct implementations of the same training part by float rounding, which the game and
    Adam amplify over iterations one element at a time (an element whose gradient is near zero may
    flip its step); the norm of the whole difference relative to the training update stays at the
    rounding level on any CPU, while a wrong gradient, batch or optimiser state moves it by the
    update's own scale.
    """
    keys = [k for k, v in initial.items() if v.is_floating_point()]
    assert keys and set(keys) <= set(weights) and set(keys) <= set(reference)
    diff = sum((weights[k].double() - reference[k].double()).pow(2).sum().item() for k in keys)
    update = sum((reference[k].double() - initial[k].double()).pow(2).sum().item() for k in keys)
    assert update > 0, "the reference did not move from the initial weights"
    return (diff / update) ** 0.5


def assert_same_tensors(a: dict, b: dict) -> None:
    """Bit-identical tensors under the same names."""
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def run_dirs(parent: Path) -> list[Path]:
    """Run folders under ``parent`` (empty if it does not exist)."""
    if not parent.exists():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir())


def invoke(argv, capsys) -> tuple[int | None, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr). An escaping exception gives code None."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:  # what a user would see as a traceback
        out, err = capsys.readouterr()
        return None, out, err + f"\nTraceback (escaped {type(exc).__name__}: {exc})"
    out, err = capsys.readouterr()
    return code, out, err
