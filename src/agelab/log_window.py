"""The logging window: what the iterations since the last log line logged, and how fast they ran.

A phase's logs (its "loss" and the terms it reports) arrive once per update, ``phase.repeats``
times per iteration, so the mean of key "phase/term" over the window is its sum divided by
repeats x iterations. The sums stay on the device and are added to inside the iteration,
which may be captured into a CUDA graph and replayed (:mod:`agelab.cuda_graph`): a key's
tensor is made at its first value (the iterations before a capture run eagerly) and is then
only added to or zeroed in place, never replaced.
"""

from __future__ import annotations

import time
from typing import Mapping

from torch import Tensor


class LogWindow:
    """Loss sums on the device, iterations and images on the host, since the last :meth:`reset`."""

    def __init__(self, repeats: Mapping[str, int]):
        """``repeats``: phase name -> updates per iteration."""
        self.repeats = dict(repeats)
        self.sums: dict[str, Tensor] = {}
        self.reset()

    def add(self, phase: str, logs: Mapping[str, Tensor]) -> None:
        """One update's logs of ``phase``, as "phase/term" sums; inside the iteration, no host sync."""
        for k, v in logs.items():
            key = f"{phase}/{k}"
            if key in self.sums:
                self.sums[key].add_(v.float())
            else:
                self.sums[key] = v.detach().float().clone()

    def count(self, images: int) -> None:
        """On the host after each iteration: one more iteration, of ``images`` images."""
        self.iterations += 1
        self.images += images

    def means(self) -> dict[str, Tensor]:
        """Each key's mean per update over the window (on the device)."""
        return {k: v / (self.repeats[k.split("/")[0]] * max(self.iterations, 1)) for k, v in self.sums.items()}

    def images_per_second(self) -> float:
        """Images counted since the reset, per second of wall-clock time since then."""
        return self.images / max(time.perf_counter() - self.started, 1e-9)

    def reset(self) -> None:
        """An empty window from now; the sums are zeroed in place."""
        for v in self.sums.values():
            v.zero_()
        self.iterations, self.images = 0, 0
        self.started = time.perf_counter()
