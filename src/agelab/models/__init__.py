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


class ModuleGroup:
    """Several networks stepped by one optimiser, for a :class:`Phase` (e.g. ALI's encoder and generator).

    Not an ``nn.Module``: a model keeps it as a plain attribute, so its networks are not
    registered twice and the state_dict keys stay the networks' own.
    """

    def __init__(self, *modules: nn.Module):
        self.modules = modules

    def parameters(self):
        for m in self.modules:
            yield from m.parameters()

    def requires_grad_(self, flag: bool = True) -> "ModuleGroup":
        for m in self.modules:
            m.requires_grad_(flag)
        return self

    def compile(self, **kwargs) -> None:
        for m in self.modules:
            m.compile(**kwargs)


from agelab.models.age import AGE, ModelConfig  # noqa: E402

# ModelConfig.model -> the model class (module path, class name); imported on demand.
MODEL_TYPES = {
    "age": ("agelab.models.age", "AGE"),  # unconditional AGE (paper 2)
    "cage": ("agelab.models.conditional", "ConditionalAGE"),  # conditional AGE, colorization (paper 3.2)
    "pix2pix": ("agelab.models.pix2pix", "Pix2Pix"),  # the colorization baseline (pix2pix with noise maps)
    # baselines of the paper's comparisons (docs/comparison.md)
    "dcgan": ("agelab.models.dcgan", "DCGAN"),
    "vae": ("agelab.models.vae", "VAE"),
    "ali": ("agelab.models.ali", "ALI"),
}
BASELINE_MODELS = ("dcgan", "vae", "ali")
COLORIZATION_MODELS = ("cage", "pix2pix")


def model_class(name: str) -> type:
    """The class of model type ``name`` (ModelConfig.model)."""
    import importlib

    if name not in MODEL_TYPES:
        raise ValueError(f"unknown model type {name!r}; known: {', '.join(MODEL_TYPES)}")
    module, cls = MODEL_TYPES[name]
    return getattr(importlib.import_module(module), cls)


def make_model(cfg: ModelConfig, game=None) -> nn.Module:
    """A freshly initialised model of type ``cfg.model``; ``game`` (an AGE GameConfig) is for the AGE models."""
    return model_class(cfg.model)(cfg, game)


__all__ = ["AGE", "BASELINE_MODELS", "COLORIZATION_MODELS", "ModuleGroup", "MODEL_TYPES", "ModelConfig", "Phase", "make_model", "model_class"]
