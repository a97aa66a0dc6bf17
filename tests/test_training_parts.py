"""The training loop's parts, each on its own: the logging window.

The loop that puts them together (resume, rollback, signals, CUDA graphs) is tested through
``train()`` in test_trainer.py, test_reliability.py and test_cuda_graph.py; these tests say
what each part promises the loop.
"""

from __future__ import annotations

import torch

from agelab import log_window
from agelab.log_window import LogWindow


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
