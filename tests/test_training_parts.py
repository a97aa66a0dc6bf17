"""The training loop's parts, each on its own: the logging window, the divergence guard, the
training state and the iteration.

The loop that puts them together (resume, rollback, signals, CUDA graphs) is tested through
``train()`` in test_trainer.py, test_reliability.py and test_cuda_graph.py; these tests say
what each part promises the loop.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from agelab import log_window
from agelab.checkpoint import CheckpointError, list_checkpoints, step_dir_name
from agelab.distributed import Shard
from agelab.divergence_guard import DivergenceGuard
from agelab.log_window import LogWindow
from agelab.trainer import Iteration, build_model
from agelab.training_state import TrainingError, TrainingState, load_train_state
from conftest import assert_same_tensors, tiny_config

CPU = torch.device("cpu")
NAN = float("nan")


# ---------------------------------------------------------------------------
# the logging window
# ---------------------------------------------------------------------------
def test_window_means_divide_each_sum_by_repeats_times_iterations():
    window = LogWindow({"enc": 1, "gen": 2})
    for enc, gens in [(1.0, (2.0, 4.0)), (3.0, (6.0, 8.0))]:  # two iterations: enc steps once, gen twice
        window.add("enc", {"loss": torch.tensor(enc)})
        for g in gens:
            window.add("gen", {"loss": torch.tensor(g), "rec_z": torch.tensor(10 * g)})
        window.count(64)
    means = window.means()
    assert sorted(means) == ["enc/loss", "gen/loss", "gen/rec_z"]
    assert means["enc/loss"].item() == 2.0
    assert means["gen/loss"].item() == 5.0 and means["gen/rec_z"].item() == 50.0


def test_window_sums_low_precision_logs_in_float32():
    window = LogWindow({"enc": 1})
    window.add("enc", {"loss": torch.tensor(1.0, dtype=torch.bfloat16)})
    window.add("enc", {"loss": torch.tensor(2**-9, dtype=torch.bfloat16)})  # lost in a bfloat16 sum (8 bits)
    assert window.sums["enc/loss"].dtype == torch.float32
    assert window.sums["enc/loss"].item() == 1 + 2**-9


def test_window_reset_zeroes_the_same_tensors_so_a_captured_graph_keeps_adding_to_them():
    window = LogWindow({"enc": 1})
    window.add("enc", {"loss": torch.tensor(5.0)})
    window.count(8)
    captured = window.sums["enc/loss"]
    window.reset()
    assert window.sums["enc/loss"] is captured and captured.item() == 0.0
    assert window.iterations == 0 and window.images == 0
    window.add("enc", {"loss": torch.tensor(3.0)})
    window.count(8)
    assert window.means()["enc/loss"].item() == 3.0


def test_window_images_per_second_counts_the_images_since_the_reset(monkeypatch):
    clock = {"now": 100.0}
    monkeypatch.setattr(log_window.time, "perf_counter", lambda: clock["now"])
    window = LogWindow({"enc": 1})
    window.count(64)
    window.count(64)
    clock["now"] = 102.0
    assert window.images_per_second() == 64.0
    window.reset()
    window.count(32)
    clock["now"] = 106.0
    assert window.images_per_second() == 8.0


# ---------------------------------------------------------------------------
# the divergence guard
# ---------------------------------------------------------------------------
def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def run_iterations(guard: DivergenceGuard, losses_per_iteration) -> None:
    for losses in losses_per_iteration:
        for loss in losses:
            guard.add_loss(torch.tensor(loss))
        guard.end_iteration()


def test_guard_is_quiet_while_every_loss_and_weight_is_finite():
    guard = DivergenceGuard(CPU, start=0)
    run_iterations(guard, [(1.0, 2.0), (0.5, 3.0)])

    def mean_losses():
        pytest.fail("the mean losses are computed only to report a non-finite loss")

    assert guard.trouble(small_net(), 2, mean_losses) is None


def test_guard_names_the_first_iteration_with_a_non_finite_loss_and_quotes_the_mean_losses():
    guard = DivergenceGuard(CPU, start=10)  # resumed at iteration 10
    run_iterations(guard, [(1.0, 2.0), (1.0, 2.0), (1.0, NAN), (1.0, 2.0)])  # iterations 11..14; 13 has a NaN
    means = {"enc/loss": torch.tensor(1.0), "gen/loss": torch.tensor(NAN), "gen/rec_z": torch.tensor(0.5)}
    assert guard.trouble(small_net(), 14, lambda: means) == "non-finite loss at iteration 13 (enc/loss=1, gen/loss=nan)"


def test_guard_names_non_finite_weights_and_buffers_with_the_step():
    guard = DivergenceGuard(CPU, start=0)
    run_iterations(guard, [(1.0,)] * 7)  # every loss finite
    net = small_net()
    net[1].running_mean[0] = math.inf
    assert guard.trouble(net, 7, lambda: {}) == "non-finite weights at iteration 7 (1.running_mean)"
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.fill_(NAN)
    assert guard.trouble(net, 7, lambda: {}) == "non-finite weights at iteration 7 (0.weight, 0.bias, 1.weight, ...)"


def test_guard_reset_starts_a_new_segment_in_the_same_tensors():
    guard = DivergenceGuard(CPU, start=0)
    flag, count = guard.finite, guard.finite_iters
    run_iterations(guard, [(1.0,), (NAN,)])
    guard.reset(20)  # rolled back to iteration 20
    assert guard.finite is flag and guard.finite_iters is count  # what a captured CUDA graph updates
    assert guard.trouble(small_net(), 20, lambda: {}) is None
    run_iterations(guard, [(1.0,), (math.inf,)])
    assert guard.trouble(small_net(), 22, lambda: {}) == "non-finite loss at iteration 22 ()"


# ---------------------------------------------------------------------------
# the training state
# ---------------------------------------------------------------------------
def new_state(tmp_path, **overrides) -> TrainingState:
    """A TrainingState of a tiny AGE model with one Adam per phase, checkpointing under tmp_path/run."""
    cfg = tiny_config(tmp_path / "runs", **overrides)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, channels=1)
    optimizers = {p.name: torch.optim.Adam(p.module.parameters(), lr=cfg.lr) for p in model.phases()}
    return TrainingState(model, optimizers, cfg, tmp_path / "run", Shard(), CPU)


def take_steps(state: TrainingState, n: int = 1) -> None:
    """n Adam steps of every optimiser with made-up gradients: weights and moments change."""
    for _ in range(n):
        for opt in state.optimizers.values():
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = torch.randn_like(p)
            opt.step()


def weights(state: TrainingState) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in state.model.state_dict().items()}


def test_save_writes_a_checkpoint_whose_state_pt_a_resume_reads(tmp_path):
    state = new_state(tmp_path)
    take_steps(state)
    state.save(3)
    (folder,) = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert folder.name == step_dir_name(3)
    saved = load_train_state(folder)
    assert list(saved) == ["step", "optimizers", "rng", "lr_scale", "rollbacks", "model"]  # the format old runs have
    assert saved["step"] == 3 and (saved["lr_scale"], saved["rollbacks"]) == (1.0, 0)
    assert sorted(saved["optimizers"]) == ["enc", "gen"] and torch.equal(saved["rng"]["torch"], torch.get_rng_state())


def test_roll_back_restores_weights_optimisers_and_rng_and_halves_the_learning_rate(tmp_path):
    state = new_state(tmp_path)
    take_steps(state)
    state.save(2)
    saved_weights = weights(state)
    saved_moments = {k: v.clone() for k, v in state.optimizers["enc"].state_dict()["state"][0].items()}
    draws_after_save = torch.rand(5)
    take_steps(state, 2)  # the run goes on, then diverges

    assert state.roll_back("non-finite loss at iteration 4") == 2
    assert_same_tensors(weights(state), saved_weights)
    assert_same_tensors(state.optimizers["enc"].state_dict()["state"][0], saved_moments)
    assert torch.equal(torch.rand(5), draws_after_save)  # the random numbers the run drew after the checkpoint
    assert (state.lr_scale, state.rollbacks) == (0.5, 1)
    lr = state.set_learning_rate(2)
    assert lr == state.cfg.lr * 0.5
    assert {g["lr"] for opt in state.optimizers.values() for g in opt.param_groups} == {lr}


def test_each_rollback_halves_the_learning_rate_again_until_max_rollbacks(tmp_path):
    state = new_state(tmp_path, max_rollbacks=2)
    state.save(0)
    assert [(state.roll_back("NaN"), state.lr_scale) for _ in range(2)] == [(0, 0.5), (0, 0.25)]
    with pytest.raises(TrainingError, match=r"^NaN; giving up after 2 rollback\(s\) \(--max-rollbacks 2\)$"):
        state.roll_back("NaN")
    assert (state.lr_scale, state.rollbacks) == (0.25, 2)


def test_roll_back_without_a_good_checkpoint_is_a_training_error(tmp_path):
    state = new_state(tmp_path)
    with pytest.raises(TrainingError, match=r"^NaN at 1; no good checkpoint to roll back to$"):
        state.roll_back("NaN at 1")


def test_resume_continues_with_the_checkpoints_learning_rate_factor(tmp_path):
    state = new_state(tmp_path)
    state.save(0)
    state.roll_back("NaN")
    state.save(4)  # lr_scale 0.5, 1 rollback
    path = tmp_path / "run" / "checkpoints" / step_dir_name(4)

    resumed = new_state(tmp_path, seed=1)  # other initial weights
    resumed.resume(path, load_train_state(path))
    assert (resumed.lr_scale, resumed.rollbacks) == (0.5, 1)
    assert_same_tensors(weights(resumed), weights(state))


def test_resume_of_a_checkpoint_from_before_the_divergence_guard_starts_at_full_learning_rate(tmp_path):
    state = new_state(tmp_path)
    state.save(0)
    path = tmp_path / "run" / "checkpoints" / step_dir_name(0)
    old_format = {k: v for k, v in load_train_state(path).items() if k not in ("lr_scale", "rollbacks")}
    resumed = new_state(tmp_path)
    resumed.lr_scale, resumed.rollbacks = 0.125, 3
    resumed.resume(path, old_format)
    assert (resumed.lr_scale, resumed.rollbacks) == (1.0, 0)


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    state = new_state(tmp_path)
    state.save(0)
    path = tmp_path / "run" / "checkpoints" / step_dir_name(0)
    other = new_state(tmp_path, latent_dim=8)
    with pytest.raises(CheckpointError, match="another model config"):
        other.resume(path, load_train_state(path))


def test_the_learning_rate_follows_the_halving_schedule_times_the_factor(tmp_path, monkeypatch):
    state = new_state(tmp_path, lr_halve_every=10)
    factors = []
    monkeypatch.setattr(state.model, "set_lr_factor", factors.append)
    state.lr_scale = 0.5
    assert state.set_learning_rate(25) == state.cfg.lr * 0.5 * 0.25  # halved at iterations 10 and 20
    assert factors == [0.125]  # what the model scales its own step sizes by (AGE: the adversary weight's)


# ---------------------------------------------------------------------------
# the iteration
# ---------------------------------------------------------------------------
def test_an_iteration_records_every_update_in_the_window_and_the_guard(tmp_path):
    state = new_state(tmp_path)
    model, phases = state.model, state.model.phases()
    window, guard = LogWindow({p.name: p.repeats for p in phases}), DivergenceGuard(CPU, start=0)
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    iteration = Iteration(model, phases, state.optimizers, images, state.cfg, Shard(), window, guard)
    before = weights(state)

    iteration(torch.arange(8))
    iteration(torch.arange(8, 16))
    assert {"enc/loss", "gen/loss"} <= set(window.sums)
    assert int(guard.finite_iters) == 2 and bool(guard.finite)
    changed = {k.split(".")[0] for k, v in weights(state).items() if not torch.equal(v, before[k])}
    assert changed == {"encoder", "generator"}  # every phase stepped its network
