"""Checkpoints: atomic save, checksums, safe loading, fallback and pruning; ``agelab.load``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import agelab
from agelab import checkpoint as ckpt
from agelab.checkpoint import (
    CheckpointError,
    latest_good_checkpoint,
    list_checkpoints,
    load_model_files,
    load_state,
    resolve_checkpoint,
    save_checkpoint,
    sha256_file,
    verify_checkpoint,
)
from agelab.models.age import AGE, ModelConfig
from conftest import flip_byte, invoke

MODEL_CFG = ModelConfig(latent_dim=4, channels=1, image_size=32, width=4)


def make_model(seed=0) -> AGE:
    torch.manual_seed(seed)
    return AGE(MODEL_CFG)


def make_state(step: int) -> dict:
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.sample(4).mean().backward()
    opt.step()
    return {"step": step, "optimizers": {"gen": opt.state_dict()}, "rng": {"torch": torch.get_rng_state()}}


def save(root: Path, step: int, model=None, keep: int = 10) -> Path:
    model = model if model is not None else make_model(step)
    return save_checkpoint(root, step, model, model.cfg.to_dict(), make_state(step), keep=keep)


def rewrite_manifest(path: Path) -> None:
    """Recompute the manifest checksums, as an attacker (or a careless tool) would."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(path / name) for name in manifest["files"]}
    (path / "manifest.json").write_text(json.dumps(manifest))


def no_tmp_folders(root: Path) -> bool:
    return not any(p.name.startswith(".tmp-") for p in root.iterdir())


# ---------------------------------------------------------------------------
def test_save_verify_load_roundtrip(tmp_path):
    model = make_model(1)
    state = make_state(7)
    path = save_checkpoint(tmp_path, 7, model, model.cfg.to_dict(), state)
    assert path == tmp_path / "step-0000007"
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.json", "model.safetensors", "state.pt"]
    manifest = verify_checkpoint(path)
    assert manifest["step"] == 7 and set(manifest["files"]) == {"model.safetensors", "model.json", "state.pt"}

    cfg, weights = load_model_files(path)
    assert cfg == MODEL_CFG.to_dict()
    expected = model.state_dict()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)

    loaded = load_state(path)
    assert loaded["step"] == 7
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    opt_a, opt_b = loaded["optimizers"]["gen"], state["optimizers"]["gen"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for k in opt_b["state"]:
        assert all(torch.equal(opt_a["state"][k][f], opt_b["state"][k][f]) for f in opt_b["state"][k])
    assert no_tmp_folders(tmp_path)


def test_model_files_rebuild_an_identical_model(tmp_path):
    model = make_model(2).eval()
    path = save(tmp_path, 1, model)
    cfg, weights = load_model_files(path)
    rebuilt = AGE(ModelConfig.from_dict(cfg))
    rebuilt.load_state_dict(weights)
    rebuilt.eval()
    z = torch.randn(3, 4)
    assert torch.equal(rebuilt.decode(z), model.decode(z))


@pytest.mark.parametrize("name", ["model.safetensors", "model.json", "state.pt"])
def test_bit_flip_is_detected_and_older_checkpoint_used(tmp_path, name):
    save(tmp_path, 1)
    newest = save(tmp_path, 2)
    assert latest_good_checkpoint(tmp_path) == newest
    flip_byte(newest / name)
    with pytest.raises(CheckpointError, match="corrupted"):
        verify_checkpoint(newest)
    with pytest.raises(CheckpointError):
        load_model_files(newest)
    with pytest.raises(CheckpointError):
        load_state(newest)
    with pytest.warns(UserWarning, match=r"skipped damaged checkpoint\(s\) step-0000002 \(.*corrupted.*\); using .*step-0000001"):
        assert latest_good_checkpoint(tmp_path) == tmp_path / "step-0000001"
    with pytest.warns(UserWarning, match="skipped damaged checkpoint"):
        assert resolve_checkpoint(tmp_path) == tmp_path / "step-0000001"


def test_commands_say_which_checkpoint_they_skipped_and_used(run_copy, capsys):
    """A truncated newest checkpoint: every command that resolves the run falls back, and says so on stderr."""
    (run_copy / "checkpoints" / "step-0000004" / "model.safetensors").write_bytes(b"\0" * 100)
    for argv in (["sample", run_copy, "--n", "4"], ["reconstruct", run_copy, "--n", "2"]):
        code, _, err = invoke(argv, capsys)
        assert code == 0, err
        lines = [line for line in err.splitlines() if "warning" in line]
        assert len(lines) == 1, err
        assert lines[0].startswith(f"agelab {argv[0]}: warning: skipped damaged checkpoint(s) step-0000004 (")
        assert lines[0].endswith(f"using {run_copy / 'checkpoints' / 'step-0000002'}")


def test_no_good_checkpoint_left(tmp_path):
    for step in (1, 2):
        flip_byte(save(tmp_path, step) / "model.safetensors")
    assert latest_good_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError):
        resolve_checkpoint(tmp_path)
    assert latest_good_checkpoint(tmp_path / "does-not-exist") is None


def test_missing_file_or_manifest_is_detected(tmp_path):
    a, b, c = save(tmp_path, 1), save(tmp_path, 2), save(tmp_path, 3)
    (a / "state.pt").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        verify_checkpoint(a)
    (b / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        verify_checkpoint(b)
    (c / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        verify_checkpoint(c)
    assert latest_good_checkpoint(tmp_path) is None


class Payload:
    """Any non-tensor object: weights_only loading must refuse to rebuild it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path: str):
    Path(path).write_text("code ran")
    return path


def test_pickled_object_in_state_is_refused(tmp_path):
    path = save(tmp_path, 1)
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "optimizers": {}, "rng": {}, "payload": Payload(str(marker))}, path / "state.pt")
    rewrite_manifest(path)
    verify_checkpoint(path)  # checksums are fine: only the weights_only guard is left
    with pytest.raises(CheckpointError, match="refusing"):
        load_state(path)
    assert not marker.exists()
    # control: an unrestricted unpickler would have run the payload
    torch.load(path / "state.pt", weights_only=False)
    assert marker.read_text() == "code ran"


def test_keep_prunes_older_checkpoints_and_leaves_no_temporaries(tmp_path):
    model = make_model()
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, model, model.cfg.to_dict(), make_state(step), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000004", "step-0000005"]
    assert no_tmp_folders(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000004", "step-0000005"]


def test_list_checkpoints_sorts_numerically_and_ignores_other_folders(tmp_path):
    for name in ("step-0000010", "step-0000002", "step-12345678", "step-abc", ".tmp-step-0000003-1", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "step-0000001").write_text("a file, not a folder")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000002", "step-0000010", "step-12345678"]


def test_resaving_a_step_replaces_it(tmp_path):
    save(tmp_path, 3, make_model(0))
    model = make_model(1)
    path = save(tmp_path, 3, model)
    _, weights = load_model_files(path)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000003"]


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    good = save(tmp_path, 1)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, 2)
    assert [p.name for p in tmp_path.iterdir()] == [good.name]
    assert latest_good_checkpoint(tmp_path) == good


# ---------------------------------------------------------------------------
# agelab.load
# ---------------------------------------------------------------------------
def test_load_from_run_folder_and_checkpoint_folder(trained_run):
    newest = trained_run / "checkpoints" / "step-0000004"
    model = agelab.load(trained_run)
    assert model.checkpoint_path == newest
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    _, weights = load_model_files(newest)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    older = agelab.load(trained_run / "checkpoints" / "step-0000002")
    assert older.checkpoint_path.name == "step-0000002"
    x = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 32, 32)
    assert torch.allclose(model.encode(x).norm(dim=1), torch.ones(3), atol=1e-5)


def test_load_errors_are_checkpoint_errors(tmp_path, run_copy):
    with pytest.raises(CheckpointError):
        agelab.load(tmp_path / "missing")
    newest = run_copy / "checkpoints" / "step-0000004"
    cfg = json.loads((newest / "model.json").read_text())
    (newest / "model.json").write_text(json.dumps(dict(cfg, width=8)))
    rewrite_manifest(newest)
    with pytest.raises(CheckpointError, match="do not match"):
        agelab.load(newest)
    (newest / "model.json").write_text(json.dumps(dict(cfg, model="normalizing-flow")))
    rewrite_manifest(newest)
    with pytest.raises(CheckpointError, match="unsupported model"):
        agelab.load(newest)
