"""Models: the registry of model types, and (imported on first use) the base class, phases and model classes.

    GenerativeModel (models/base.py)    the interface and the declared capabilities
    ├── AGE (age.py)                    the AGE game
    │   └── ConditionalAGE              colorization (conditional.py)
    ├── DCGAN, VAE, ALI                 the baselines of the paper's comparisons (dcgan.py, vae.py, ali.py)
    └── Pix2Pix                         the colorization baseline (pix2pix.py)

:data:`MODEL_TYPES` is the one list of model names: ``config.MODELS`` (the ``--model`` choices),
:func:`make_model` and ``agelab.load`` read it, and the name lists below are derived from what
each class declares. Importing this package loads no torch (the command-line parser reads
the names); the classes are imported when first asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported on first use (__getattr__)
    from agelab.models.age import AGE
    from agelab.models.base import GenerativeModel, LossFn, ModelConfig, ModuleGroup, Phase

# ModelConfig.model -> the model class (module path, class name); imported on demand. The order is the order
# in which lists of model names are shown.
MODEL_TYPES = {
    "age": ("agelab.models.age", "AGE"),  # unconditional AGE (paper 2)
    "cage": ("agelab.models.conditional", "ConditionalAGE"),  # conditional AGE, colorization (paper 3.2)
    "pix2pix": ("agelab.models.pix2pix", "Pix2Pix"),  # the colorization baseline (pix2pix with noise maps)
    # baselines of the paper's comparisons (docs/comparison.md)
    "dcgan": ("agelab.models.dcgan", "DCGAN"),
    "vae": ("agelab.models.vae", "VAE"),
    "ali": ("agelab.models.ali", "ALI"),
}


def model_class(name: str) -> "type[GenerativeModel]":
    """The class of model type ``name`` (ModelConfig.model)."""
    if name not in MODEL_TYPES:
        raise ValueError(f"unknown model type {name!r}; known: {', '.join(MODEL_TYPES)}")
    module, cls = MODEL_TYPES[name]
    return getattr(importlib.import_module(module), cls)


def make_model(cfg: "ModelConfig", config=None) -> "GenerativeModel":
    """A freshly initialised model of type ``cfg.model``; ``config`` is its training config (an instance of the
    class's ``config_class``, e.g. an AGE GameConfig), None for its defaults (what ``agelab.load`` builds)."""
    return model_class(cfg.model)(cfg, config)


def model_names(**capabilities) -> tuple[str, ...]:
    """The registered model types whose classes declare these capability values, in registry order.

    ``model_names(conditional=True)`` -> ("cage", "pix2pix").
    """
    return tuple(name for name in MODEL_TYPES
                 if all(getattr(model_class(name), k) == v for k, v in capabilities.items()))


def names_text(names: tuple[str, ...], last: str = "or") -> str:
    """("age", "vae", "ali") -> "age, vae or ali" (for messages)."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"


# Name lists derived from the classes' capabilities (computed on first use: they import every model class).
_DERIVED = {
    "COLORIZATION_MODELS": dict(conditional=True),  # ("cage", "pix2pix")
    "BASELINE_MODELS": dict(conditional=False, age_game=False),  # ("dcgan", "vae", "ali")
}
_LAZY = {"Phase": "agelab.models.base", "ModuleGroup": "agelab.models.base", "LossFn": "agelab.models.base",
         "GenerativeModel": "agelab.models.base", "ModelConfig": "agelab.models.base", "AGE": "agelab.models.age"}


def __getattr__(name: str):
    if name in _DERIVED:
        value = model_names(**_DERIVED[name])
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = ["AGE", "BASELINE_MODELS", "COLORIZATION_MODELS", "GenerativeModel", "LossFn", "ModuleGroup", "MODEL_TYPES",
           "ModelConfig", "Phase", "make_model", "model_class", "model_names", "names_text"]
