"""Checkpoints: atomic, checksummed, and safe to load.

A checkpoint is a folder ``checkpoints/step-NNNNNNN/`` holding

    model.safetensors   every weight and buffer of the model (safetensors: no code on load)
    model.json          the ModelConfig that rebuilds the networks
    state.pt            optimiser states, step, RNG states; loaded with torch.load(weights_only=True)
    manifest.json       step and the sha256 of each file above

It is written into a hidden temporary folder ``.tmp-step-NNNNNNN-<pid>`` and
renamed into place only when complete, so a crash never leaves a half-written
checkpoint under a valid name (a kill mid-write leaves only the temporary folder,
which :func:`remove_stale_temporaries` clears on resume). Loading verifies every
checksum before reading anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from agelab.errors import first_line

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupted or of the wrong kind."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def save_checkpoint(ckpt_root: Path, step: int, model: torch.nn.Module, model_config: dict,
                    state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` under ``ckpt_root`` atomically; keep the newest ``keep``."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / step_dir_name(step)
    tmp = ckpt_root / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / "model.safetensors"))
        (tmp / "model.json").write_text(json.dumps(model_config, indent=2, sort_keys=True))
        torch.save(state, tmp / "state.pt")
        files = {name: sha256_file(tmp / name) for name in ("model.safetensors", "model.json", "state.pt")}
        for name in files:  # make the bytes durable before the rename publishes them
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        manifest = {"format": FORMAT_VERSION, "step": step, "files": files}
        with open(tmp / MANIFEST, "w") as f:
            f.write(json.dumps(manifest, indent=2, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(ckpt_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but is not ours, or cannot tell: assume alive
        return True
    return True


def remove_stale_temporaries(ckpt_root: Path) -> list[Path]:
    """Delete ``.tmp-*`` folders left by a process killed mid-save; return what was removed.

    A temporary folder whose writer (the pid in its name) is still alive is left alone.
    """
    removed = []
    if not ckpt_root.is_dir():
        return removed
    for p in ckpt_root.iterdir():
        if not p.name.startswith(".tmp-"):
            continue
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Checkpoint folders under ``ckpt_root``, oldest first (by step)."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def verify_checkpoint(path: Path) -> dict:
    """Check that every file is present and matches its checksum; return the manifest."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: not a checkpoint (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
            raise TypeError(f"{MANIFEST} 'files' is not a name -> sha256 mapping")
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: unreadable {MANIFEST}") from None
    for name in ("model.safetensors", "model.json", "state.pt"):
        if name not in files:
            raise CheckpointError(f"{path}: {MANIFEST} lists no checksum for {name}")
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path}: missing {name}")
        if sha256_file(f) != digest:
            raise CheckpointError(f"{path}: {name} is corrupted (checksum mismatch)")
    return manifest


def load_model_files(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Verified (model_config, weights) of a checkpoint folder."""
    verify_checkpoint(path)
    try:
        model_config = json.loads((path / "model.json").read_text())
        if not isinstance(model_config, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise CheckpointError(f"{path}: unreadable model.json ({first_line(exc)})") from None
    try:
        weights = load_file(str(path / "model.safetensors"))
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: unreadable model.safetensors ({first_line(exc)})") from None
    return model_config, weights


def load_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """``optimizer.load_state_dict(state_dict)``, then this run's choices where the saved state differs.

    - The implementation (``foreach``/``fused``) stays this optimiser's, whatever wrote the state.
    - Each state tensor gets its parameter's memory layout. A loaded tensor keeps the strides it
      was saved with, so after a resume that changes ``--channels-last`` Adam's moments would be
      channels-last beside contiguous parameters, or the other way round. torch's fused CPU Adam
      (agelab's default on CPU) then pairs the wrong elements without any error: the weights
      went about 1.4e-3 astray within 4 iterations in a test where the layout change alone moves
      them 3e-8 (tests/test_trainer.py). The values are kept; only their order in memory changes.
    """
    defaults = {k: optimizer.defaults[k] for k in ("foreach", "fused") if k in optimizer.defaults}
    optimizer.load_state_dict(state_dict)
    for group in optimizer.param_groups:
        group.update(defaults)
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)  # p's strides (dense p: preserve_format)


def load_state(path: Path) -> dict:
    """Verified training state (optimisers, step, RNG). Never unpickles code objects."""
    verify_checkpoint(path)
    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses pickled code: say so plainly, in one line
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()] or [""]
        why = next((line.split("WeightsUnpickler error:", 1)[1].split(". ")[0].strip() for line in lines
                    if "WeightsUnpickler error:" in line), None)
        if why is not None:
            raise CheckpointError(f"{path}: refusing to load state.pt: it holds pickled objects that are not plain "
                                  f"data, which could run code ({why})") from None
        raise CheckpointError(f"{path}: refusing to load state.pt ({type(exc).__name__}: {lines[0]})") from None


def latest_good_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest checkpoint that passes verification (older ones are fallbacks).

    Falling back is never silent: when newer checkpoints fail verification, one warning names
    each of them with the reason and the checkpoint used instead.
    """
    skipped: list[str] = []
    for path in reversed(list_checkpoints(ckpt_root)):
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            skipped.append(f"{path.name} ({first_line(exc).replace(str(path) + ': ', '')})")
            continue
        if skipped:
            warnings.warn(f"skipped damaged checkpoint(s) {'; '.join(skipped)}; using {path}", stacklevel=2)
        return path
    return None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder (its newest good checkpoint) or a checkpoint folder -> checkpoint folder."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such run folder or checkpoint")
    if (p / MANIFEST).is_file():
        return p
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    found = latest_good_checkpoint(root)
    if found is None:
        raise CheckpointError(f"{p}: no valid checkpoint found")
    return found
