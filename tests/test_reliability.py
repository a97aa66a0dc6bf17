"""Reliability (issue 8): hard kills, graceful stops, damaged checkpoints, divergence, concurrent runs.

The subprocess tests run the real ``python -m agelab`` with tiny options and
one thread; each takes a few seconds, most of it Python and torch start-up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agelab import checkpoint as ckpt
from agelab import runs, trainer
from agelab.checkpoint import list_checkpoints, remove_stale_temporaries
from agelab.cli import main
from agelab.config import PRESETS, TrainConfig, build_config
from agelab.runs import Run, create_run_dir, read_metrics, read_status
from agelab.trainer import TrainingError, train
from conftest import assert_same_tensors, checkpoint_weights, flip_byte, run_dirs, tiny_config

# what `agelab train` gets in every subprocess here (the digits preset underneath)
SUB_TINY = {"width": 4, "latent_dim": 4, "batch_size": 8, "sample_every": 100000, "threads": 1}


def cli_args(options: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]


def agelab_proc(args, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(cwd / "xdg-cache"))
    env.pop("AGELAB_DATA", None)
    return subprocess.Popen([sys.executable, "-m", "agelab", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early (rc {proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


# ---------------------------------------------------------------------------
# 1. kill -9 at a random moment, then --resume: bit-identical to an uninterrupted run
# ---------------------------------------------------------------------------
def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(tmp_path, capsys):
    options = dict(SUB_TINY, iterations=60, log_every=5, ckpt_every=3, seed=5)
    out = tmp_path / "killed"
    proc = agelab_proc(["train", *cli_args(options), "--no-progress", "--out-dir", out], tmp_path)
    run = out / "00000-digits-age"
    # meanwhile, on the other core: the uninterrupted run of the same config, in this process
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(train, build_config("digits", **options, out_dir=str(tmp_path / "reference")),
                             progress=False)
        try:
            wait_for(lambda: list_checkpoints(run / "checkpoints"), proc)  # the first checkpoint exists
            delay = random.uniform(0, 0.7)  # anywhere in the ~1 s of training, checkpoint writes included
            time.sleep(delay)
            was_running = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        reference = future.result()
    assert proc.returncode in (-signal.SIGKILL, 0)
    print(f"killed {delay:.3f} s after the first checkpoint (still running: {was_running}); status step "
          f"{read_status(run).get('step')}; left: {sorted(p.name for p in (run / 'checkpoints').iterdir())}")
    def config(r):
        return TrainConfig.from_dict(json.loads((r / "config.json").read_text())).replace(out_dir="")

    assert config(run) == config(reference)

    assert main(["train", "--resume", str(run), "--no-progress"]) == 0, capsys.readouterr().err
    assert read_status(run)["state"] == "finished" and read_status(run)["step"] == 60
    assert_same_tensors(checkpoint_weights(run, 60), checkpoint_weights(reference, 60))
    assert not any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir())
    steps = [r["step"] for r in read_metrics(run)]
    assert steps == [r["step"] for r in read_metrics(reference)] == list(range(5, 61, 5))


def test_resume_clears_what_a_kill_mid_write_leaves(run_copy, trained_run, tmp_path, capsys):
    """Deterministic version of the random kill: the leftovers of a process killed while saving step 6."""
    ckpts = run_copy / "checkpoints"
    stale = ckpts / ".tmp-step-0000006-999999999"  # no such pid: its writer is dead
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 10)  # torn
    live = ckpts / ".tmp-step-0000006-1"  # pid 1 is alive: may be another process's save in progress
    live.mkdir()
    with open(run_copy / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "enc/loss": 1.0}) + "\n" + '{"step": 6, "enc/lo')  # torn last line
    code = main(["train", "--resume", str(run_copy), "--iterations", "6", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert not stale.exists() and live.exists()
    assert [r["step"] for r in read_metrics(run_copy)] == [2, 4, 6]
    assert read_status(run_copy)["state"] == "finished"
    reference = train(tiny_config(tmp_path / "reference", iterations=6), progress=False)
    assert_same_tensors(checkpoint_weights(run_copy, 6), checkpoint_weights(reference, 6))


def test_remove_stale_temporaries_spares_live_writers(tmp_path):
    for name in (".tmp-step-0000001-999999999", ".tmp-step-0000002-1", f".tmp-step-0000003-{os.getpid()}",
                 ".tmp-garbage", "step-0000004"):
        (tmp_path / name).mkdir()
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".tmp-garbage", ".tmp-step-0000001-999999999",
                                               f".tmp-step-0000003-{os.getpid()}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-step-0000002-1", "step-0000004"]
    assert remove_stale_temporaries(tmp_path / "missing") == []


# ---------------------------------------------------------------------------
# 2. SIGTERM / SIGINT: checkpoint, exit 0, say how to resume
# ---------------------------------------------------------------------------
def test_sigterm_and_sigint_stop_with_a_checkpoint_and_exit_0(tmp_path, capsys):
    procs = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        out = tmp_path / sig.name
        procs[sig] = (out / "00000-digits-age", agelab_proc(
            ["train", *cli_args(dict(SUB_TINY, iterations=100000, log_every=10, ckpt_every=1000)), "--no-progress",
             "--out-dir", out], tmp_path))
    try:
        for sig, (run, proc) in procs.items():
            # the initial checkpoint is written inside the signal handler's scope
            wait_for(lambda: list_checkpoints(run / "checkpoints") and read_metrics(run), proc)
            proc.send_signal(sig)
        results = {sig: proc.communicate(timeout=120) for sig, (run, proc) in procs.items()}
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()

    for sig, (run, proc) in procs.items():
        stdout, stderr = results[sig]
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
        status = read_status(run)
        assert status["state"] == "interrupted" and status["signal"] == sig.name
        assert f"stopped by {sig.name}" in stdout and f"agelab train --resume {run}" in stdout
        stop_step = status["step"]
        assert stop_step >= 10 and list_checkpoints(run / "checkpoints")[-1].name == f"step-{stop_step:07d}"

        code = main(["train", "--resume", str(run), "--iterations", str(stop_step + 3), "--no-progress"])
        assert code == 0, capsys.readouterr().err
        assert read_status(run) | {"time": None} == {"state": "finished", "step": stop_step + 3, "time": None}
        assert (run / "report.html").is_file()


# ---------------------------------------------------------------------------
# 3. atomic, verified checkpoints: --resume falls back past a damaged newest one
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_6(tmp_path_factory) -> Path:
    """The uninterrupted 6-iteration run of the shared trained_run's config."""
    return train(tiny_config(tmp_path_factory.mktemp("reference-6"), iterations=6), progress=False)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("damage", [
    pytest.param(lambda c: _truncate(c / "model.safetensors"), id="truncated-weights"),
    pytest.param(lambda c: _truncate(c / "state.pt"), id="truncated-state"),
    pytest.param(lambda c: flip_byte(c / "model.safetensors"), id="bit-flipped-weights"),
    pytest.param(lambda c: flip_byte(c / "state.pt", 200), id="bit-flipped-state"),
    pytest.param(lambda c: (c / "manifest.json").unlink(), id="no-manifest"),
])
def test_cli_resume_falls_back_to_the_newest_good_checkpoint(damage, run_copy, reference_6, capsys):
    damage(run_copy / "checkpoints" / "step-0000004")
    older = run_copy / "checkpoints" / "step-0000002"
    with pytest.warns(UserWarning, match=f"skipped damaged checkpoint.*step-0000004.*using {older}"):
        assert ckpt.latest_good_checkpoint(run_copy / "checkpoints") == older
    code = main(["train", "--resume", str(run_copy), "--iterations", "6", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "agelab train: warning: skipped damaged checkpoint(s) step-0000004 (" in err and f"using {older}" in err
    for step in (4, 6):  # the damaged step 4 was recomputed from step 2, exactly
        assert_same_tensors(checkpoint_weights(run_copy, step), checkpoint_weights(reference_6, step))
    assert [p.name for p in list_checkpoints(run_copy / "checkpoints")] == ["step-0000004", "step-0000006"]


def test_keep_ckpts_defaults_to_2(tmp_path):
    assert TrainConfig().keep_ckpts == 2
    assert all("keep_ckpts" not in preset for preset in PRESETS.values())
    cfg = build_config("digits", width=4, latent_dim=4, batch_size=8, iterations=5, ckpt_every=1, log_every=5,
                       sample_every=100, out_dir=str(tmp_path))
    assert cfg.keep_ckpts == 2
    run = train(cfg, progress=False)
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-0000004", "step-0000005"]


# ---------------------------------------------------------------------------
# 5. divergence guard: roll back with a halved learning rate, at most max_rollbacks times
# ---------------------------------------------------------------------------
def inject(monkeypatch, when, what: str = "loss") -> dict:
    """Make the generator loss NaN (or, with what='weights', an encoder BN buffer NaN) during the
    iterations for which ``when(iteration)`` is true. The iteration (1-based) is read from the
    encoder's BN batch counter, which counts real batches and is rolled back with the weights."""
    build = trainer.build_model
    seen = {"hits": []}

    def build_and_inject(cfg, channels):
        model = build(cfg, channels)
        gen_loss = model.generator_loss
        bn = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))

        def loss(x):
            iteration = int(bn.num_batches_tracked)
            hit = when(iteration)
            if hit:
                seen["hits"].append(iteration)
                if what == "weights":
                    bn.running_mean.fill_(float("nan"))  # before the forward pass that saves it for backward
            value, logs = gen_loss(x)
            if hit and what == "loss":
                value, logs = value * float("nan"), dict(logs, loss=logs["loss"] * float("nan"))
            return value, logs

        model.generator_loss = loss
        return model

    monkeypatch.setattr(trainer, "build_model", build_and_inject)
    return seen


def all_checkpoints_finite(run: Path) -> bool:
    return all(v.isfinite().all() for c in list_checkpoints(run / "checkpoints")
               for v in load_file(str(c / "model.safetensors")).values())


def test_nan_loss_rolls_back_with_halved_learning_rate_and_finishes(monkeypatch, tiny_cfg, capsys):
    once = {"done": False}

    def third_iteration_once(i):
        hit = i == 3 and not once["done"]
        once["done"] |= hit
        return hit

    seen = inject(monkeypatch, third_iteration_once)
    cfg = tiny_cfg(iterations=8, log_every=2, ckpt_every=2, lr=1e-3)
    run = train(cfg, progress=False)
    assert seen["hits"] == [3]
    assert "non-finite loss at iteration 3" in capsys.readouterr().out

    (event,) = [r for r in read_metrics(run, events=True) if "event" in r]
    assert event["event"] == "rollback" and event["step"] == 2 and event["lr_scale"] == 0.5
    assert event["detected_at"] == 4 and "non-finite loss at iteration 3" in event["reason"]
    assert "gen/loss=nan" in event["reason"]
    records = read_metrics(run)
    assert [r["step"] for r in records] == [2, 4, 6, 8]  # the abandoned step-4 line was dropped
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 5e-4, 5e-4, 5e-4])
    assert read_status(run)["state"] == "finished"
    assert all_checkpoints_finite(run)
    state = ckpt.load_state(run / "checkpoints/step-0000008")
    assert (state["lr_scale"], state["rollbacks"]) == (0.5, 1)

    # the halving factor is part of the checkpoint: a resume keeps it
    train(resume=run, overrides={"iterations": 10}, progress=False)
    assert read_metrics(run)[-1]["step"] == 10 and read_metrics(run)[-1]["lr"] == pytest.approx(5e-4)


def test_non_finite_weights_are_never_checkpointed(monkeypatch, tiny_cfg):
    once = {"done": False}

    def third_iteration_once(i):
        hit = i == 3 and not once["done"]
        once["done"] |= hit
        return hit

    inject(monkeypatch, third_iteration_once, what="weights")
    # checkpoint every iteration, log rarely: the check before each save must catch it
    run = train(tiny_cfg(iterations=6, log_every=100, ckpt_every=1, keep_ckpts=10), progress=False)
    (event,) = [r for r in read_metrics(run, events=True) if "event" in r]
    assert event["step"] == 2 and event["detected_at"] == 3
    assert "non-finite weights at iteration 3" in event["reason"] and "running_mean" in event["reason"]
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [f"step-{s:07d}" for s in range(7)]
    assert all_checkpoints_finite(run)
    assert read_status(run)["state"] == "finished"


def test_divergence_gives_up_after_max_rollbacks_with_exit_2(monkeypatch, tmp_path, capsys):
    seen = inject(monkeypatch, lambda i: i >= 3)
    out = tmp_path / "runs"
    code = main(["train", "--width", "4", "--latent-dim", "4", "--batch-size", "8", "--iterations", "8",
                 "--log-every", "2", "--ckpt-every", "2", "--out-dir", str(out), "--no-progress"])
    stdout, stderr = capsys.readouterr()
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agelab train: error: non-finite loss at iteration 3 (")
    assert "gen/loss=nan" in lines[0] and "giving up after 3 rollback(s)" in lines[0]
    assert stdout.count("rolled back to iteration 2") == 3
    assert seen["hits"][:2] == [3, 3] and set(seen["hits"]) == {3, 4}  # 2 generator steps per iteration
    (run,) = run_dirs(out)
    events = [r for r in read_metrics(run, events=True) if "event" in r]
    assert [(e["step"], e["lr_scale"]) for e in events] == [(2, 0.5), (2, 0.25), (2, 0.125)]
    status = read_status(run)
    assert status["state"] == "failed" and "iteration 3" in status["error"]
    assert all_checkpoints_finite(run)


def test_max_rollbacks_0_stops_at_the_first_non_finite_loss(monkeypatch, tiny_cfg):
    inject(monkeypatch, lambda i: i == 2)
    with pytest.raises(TrainingError, match=r"non-finite loss at iteration 2 .*0 rollback"):
        train(tiny_cfg(iterations=4, log_every=2, max_rollbacks=0), progress=False)
    (run,) = run_dirs(Path(tiny_cfg().out_dir))
    assert [r for r in read_metrics(run, events=True) if "event" in r] == []


# ---------------------------------------------------------------------------
# 7. concurrent runs never share a run folder
# ---------------------------------------------------------------------------
def test_two_train_processes_started_together_get_different_run_folders(tmp_path):
    out = tmp_path / "runs"
    procs = [agelab_proc(["train", *cli_args(dict(SUB_TINY, iterations=2, log_every=1)), "--no-progress",
                          "--out-dir", out], tmp_path) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    folders = sorted(line.split("run folder: ", 1)[1] for stdout, _ in results for line in stdout.splitlines()
                     if line.startswith("run folder: "))
    assert folders == [str(out / "00000-digits-age"), str(out / "00001-digits-age")]
    assert [p.name for p in run_dirs(out)] == ["00000-digits-age", "00001-digits-age"]
    assert all(read_status(r)["state"] == "finished" for r in run_dirs(out))


@pytest.mark.parametrize("lock", [True, False], ids=["flock", "mkdir-only"])
def test_create_run_dir_from_many_threads_at_once(tmp_path, monkeypatch, lock):
    if not lock:
        monkeypatch.setattr(runs, "fcntl", None)
    n = 12
    barrier = threading.Barrier(n)

    def claim(i):
        barrier.wait()
        return create_run_dir(tmp_path / "runs", "digits", "age")

    with ThreadPoolExecutor(n) as pool:
        claimed = list(pool.map(claim, range(n)))
    assert len(set(claimed)) == n and all(p.is_dir() for p in claimed)
    assert sorted(p.name for p in claimed) == [f"{i:05d}-digits-age" for i in range(n)]


def test_run_numbers_are_unique_across_tags_under_the_lock(tmp_path):
    n = 12
    barrier = threading.Barrier(n)

    def claim(i):
        barrier.wait()
        return create_run_dir(tmp_path / "runs", "digits", f"tag{i}")

    with ThreadPoolExecutor(n) as pool:
        claimed = list(pool.map(claim, range(n)))
    assert sorted(p.name[:5] for p in claimed) == [f"{i:05d}" for i in range(n)]


def test_a_run_folder_from_before_the_game_scale_keeps_its_game(tmp_path):
    """config.json written before --game-scale existed has no game_scale key: it means eq. 7 summed and
    lam * (1 - cos), the game that run was trained with, not today's default; its resume continues that game."""
    # the old defaults' game
    old_default_game = dict(divergence="gaussian", mu=10.0, lam=1000.0, game_scale="sum", adaptive_adversary=False)
    cfg = tiny_config(tmp_path / "old", iterations=4, ckpt_every=2, log_every=2, **old_default_game)
    run = trainer.train(cfg.replace(iterations=2), progress=False)
    saved = json.loads((run / "config.json").read_text())
    for key in ("game_scale", "adaptive_adversary", "adaptive_threshold", "adversary_weight"):
        del saved[key]  # as the older agelab wrote it
    (run / "config.json").write_text(json.dumps(saved, indent=2, sort_keys=True))
    assert Run(run).config().game_scale == "sum" and not Run(run).config().adaptive_adversary

    trainer.train(resume=run, overrides={"iterations": 4}, progress=False)
    same = trainer.train(cfg.replace(out_dir=str(tmp_path / "explicit")), progress=False)
    assert_same_tensors(checkpoint_weights(run, 4), checkpoint_weights(same, 4))
    other = trainer.train(cfg.replace(game_scale="mean", out_dir=str(tmp_path / "today")), progress=False)
    assert not torch.equal(checkpoint_weights(other, 4)["generator.net.0.weight"],
                           checkpoint_weights(run, 4)["generator.net.0.weight"])
