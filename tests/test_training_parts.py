"""The training loop's parts, each on its own: the logging window and the
divergence guard.

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
from agelab.divergence_guard import DivergenceGuard
from agelab.log_window import LogWindow

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
