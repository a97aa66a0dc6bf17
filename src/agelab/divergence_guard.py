"""The divergence guard: notices a non-finite loss or weight without a host sync per iteration.

Inside the iteration every loss goes into an on-device flag, "every loss since the segment
start was finite", and each iteration that ends with the flag still set adds one to an
on-device count. The iteration may be captured into a CUDA graph and replayed
(:mod:`agelab.cuda_graph`), so both are tensors made before it and only ever updated in
place. The trainer reads them at log and checkpoint steps (:meth:`DivergenceGuard.trouble`,
which also checks the weights), so that no checkpoint holds a non-finite value; what it does
about a problem (roll back, or give up) is :meth:`agelab.training_state.TrainingState.roll_back`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch import Tensor, nn


class DivergenceGuard:
    """The finite flag and count of one segment: the iterations after ``start`` (the run's start or a rollback's step)."""

    def __init__(self, device: torch.device, start: int):
        self.finite = torch.ones((), dtype=torch.bool, device=device)  # every loss since the segment start was finite
        self.finite_iters = torch.zeros((), dtype=torch.long, device=device)  # iterations before the first non-finite one
        self.start = start

    def add_loss(self, loss: Tensor) -> None:
        """Inside the iteration, after each update: clear the flag if ``loss`` is not finite."""
        self.finite.logical_and_(torch.isfinite(loss))

    def end_iteration(self) -> None:
        """Inside the iteration, after its last update: count it if every loss so far was finite."""
        self.finite_iters.add_(self.finite)

    def trouble(self, model: nn.Module, step: int, losses: Callable[[], Mapping[str, Tensor]]) -> str | None:
        """What is non-finite, else None: a loss since the segment start (the first iteration that had
        one), else a weight or buffer of ``model`` now, at iteration ``step``. ``losses`` gives the mean
        losses the message quotes; it is called only for a non-finite loss. Two host syncs."""
        if not bool(self.finite):
            quoted = ", ".join(f"{k}={v.item():.4g}" for k, v in sorted(losses().items()) if k.endswith("/loss"))
            return f"non-finite loss at iteration {self.start + int(self.finite_iters) + 1} ({quoted})"
        tensors = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        if not bool(torch.stack([torch.isfinite(v).all() for v in tensors.values()]).all()):
            bad = [k for k, v in tensors.items() if not bool(torch.isfinite(v).all())]
            return f"non-finite weights at iteration {step} ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
        return None

    def reset(self, start: int) -> None:
        """A new segment after iteration ``start`` (where a rollback resumes), in place."""
        self.finite.fill_(True)
        self.finite_iters.zero_()
        self.start = start
