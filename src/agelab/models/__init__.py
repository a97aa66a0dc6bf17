"""Models: networks plus the phases (what each optimiser minimises) the trainer runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

# A phase's loss takes the data batch (B, C, H, W) in [-1, 1] and returns the
# scalar to minimise plus detached scalars to log.
LossFn = Callable[[Tensor], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass
class Phase:
    """One player's move: ``repeats`` optimiser steps of ``module``'s parameters on ``loss``.

    The trainer freezes every other module's parameters during the phase, so no
    weight gradient is computed for a network that this phase does not step.
    """

    name: str
    module: nn.Module
    loss: LossFn
    repeats: int = 1


from agelab.models.age import AGE, ModelConfig  # noqa: E402

__all__ = ["AGE", "ModelConfig", "Phase"]
