"""agelab.runs.Run: the one reader of run folders (commands, the demo, eval, resume)."""

from __future__ import annotations

import json

import pytest

from agelab.checkpoint import CheckpointError
from agelab.runs import Run
from agelab.trainer import train
from conftest import tiny_config


def test_a_run_is_found_from_its_folder_or_a_checkpoint_inside_and_reads_what_training_wrote(tmp_path):
    run_dir = train(tiny_config(tmp_path / "runs", iterations=2, log_every=1, ckpt_every=2), progress=False)
    ckpt_dir = run_dir / "checkpoints" / "step-0000002"
    assert Run.of(run_dir) == Run.of(ckpt_dir) == Run(run_dir)
    run = Run.of(ckpt_dir)
    assert run.config().iterations == 2 and run.config() == tiny_config(tmp_path / "runs", iterations=2,
                                                                           log_every=1, ckpt_every=2)
    assert run.status()["state"] == "finished" and run.summary()["step"] == 2
    assert [r["step"] for r in run.metrics()] == [1, 2]

    assert Run.find(tmp_path) is None
    with pytest.raises(CheckpointError, match="not a run folder"):
        Run.of(tmp_path / "elsewhere")
    (run_dir / "summary.json").write_text("{torn")
    assert run.summary() == {}
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps(config | {"iterations": "2"}))  # edited by hand
    with pytest.raises(CheckpointError, match=r"config.json: not a valid run config \(iterations = '2'"):
        run.config()
