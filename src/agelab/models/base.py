"""What every model is to the rest of agelab: :class:`GenerativeModel`, its phases and its configs.

The trainer, the commands, the demo and the evaluation ask a model what it can do through
the capabilities its class declares (``has_encoder``, ``conditional``, ...) and let it write
its own grids and final outputs; none of them compares model names. A model has two
configs: :class:`ModelConfig` (its networks, saved as model.json) and its own training
config (the weights of its losses, its phases' repeats: a dataclass its class names in
``config_class``, which :meth:`GenerativeModel.config_from` fills from the run's TrainConfig).
A new model is a subclass here plus one line in the registry (:data:`agelab.models.MODEL_TYPES`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar

import torch
from torch import Tensor, nn

from agelab.data import to_float
from agelab.distributed import Shard
from agelab.latent import make_prior

# A phase's loss takes the batch (model.prepare_batch: a tensor x, or a tuple (x, condition)) and returns
# the scalar to minimise plus detached scalars to log.
LossFn = Callable[[object], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass
class Phase:
    """One player's move: ``repeats`` optimiser steps of ``module``'s parameters on ``loss``.

    The trainer freezes every other module's parameters during the phase, so no
    weight gradient is computed for a network that this phase does not step. ``begin``, when
    given, runs once before the phase's updates of an iteration and returns the batch its
    losses see (e.g. with what the phase's repeated updates share, computed once).
    """

    name: str
    module: nn.Module
    loss: LossFn
    repeats: int = 1
    begin: Callable[[object], object] | None = None


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


# ModelConfig fields that only some model types read; a model type's model.json leaves out the ones its class
# does not list in GenerativeModel.model_fields.
MODEL_SPECIFIC_FIELDS = ("res_blocks",)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the networks; saved as ``model.json`` next to the weights."""

    latent_dim: int
    channels: int
    image_size: int = 32
    width: int = 64
    prior: str = "sphere"
    model: str = "age"  # a registered model type (agelab.models.MODEL_TYPES); see agelab.models.make_model
    res_blocks: int = 6  # residual blocks of the conditional AGE generator (model "cage" only)
    nets: str = "dcgan"  # the DCGAN-type nets' ends: "dcgan" or "authors" (agelab.nets.dcgan.NET_STYLES)

    def to_dict(self) -> dict:
        """The fields this model type uses: an unconditional model's dict (model.json) is unchanged by
        fields that only the colorization models have, and ``nets`` is written only when it is not the
        default (the nets every model had before the field existed), so older checkpoints compare equal."""
        from agelab.models import MODEL_TYPES, model_class

        d = dataclasses.asdict(self)
        used = model_class(self.model).model_fields if self.model in MODEL_TYPES else ()
        for name in MODEL_SPECIFIC_FIELDS:
            if name not in used:
                d.pop(name)
        if d["nets"] == "dcgan":
            d.pop("nets")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def option(default, name: str | None):
    """A field of a model's training config that the TrainConfig field ``name`` sets, where the names differ.

    A field declared without it is set by the TrainConfig field of its own name. ``name=None``: no TrainConfig
    field sets it (there is no command-line option), so a trained run has the default; a model built in code
    may still be given another value. See :meth:`GenerativeModel.config_from`.
    """
    return dataclasses.field(default=default, metadata={"option": name})


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module):
    """Batch norm keeps normalising with batch statistics but leaves its running averages alone.

    The encoder sees real and generated batches; its running statistics (used at
    inference, where it encodes real images) are accumulated from real batches only.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class GenerativeModel(nn.Module):
    """A model the trainer can train and agelab can load, sample, encode and report on.

    Data: images are float (B, C, S, S) in [-1, 1] and codes (B, M) from ``self.prior``. A
    conditional model's data sample x comes with a condition c (the colorization models: x =
    the ab channels, c = the lightness L), which ``encode(x, c)`` and ``decode(z, c)`` take;
    unconditional models ignore c.

    A subclass declares its capabilities (class attributes below) and its training config
    (``config_class``), creates its networks in ``build`` and says what its optimisers minimise
    in ``phases``. The registry (:data:`agelab.models.MODEL_TYPES`) maps its ``kind`` to it.
    """

    # ---- capabilities (class attributes; read by the trainer, the commands, the demo and agelab eval) -----
    kind: ClassVar[str] = ""  # the registered name, ModelConfig.model
    has_encoder: ClassVar[bool] = True  # encode (and so reconstruct, interpolation between images, probes)
    no_encoder_reason: ClassVar[str] = ""  # what encode raises, with has_encoder = False
    conditional: ClassVar[bool] = False  # colorization: batches (ab, L) of RGB data, encode/decode take L
    age_game: ClassVar[bool] = False  # plays the AGE game (eq. 5-7): its config_class is the GameConfig
    required_prior: ClassVar[str | None] = None  # the only prior the model is defined for (the VAE: gaussian)
    prior_note: ClassVar[str] = ""  # why, for the error that says so
    model_fields: ClassVar[tuple[str, ...]] = ()  # the MODEL_SPECIFIC_FIELDS of ModelConfig this model reads
    # The model's training config: a frozen dataclass of what its losses and phases read (AGE: the GameConfig).
    # Every registered class names its own; config_from fills it from a TrainConfig.
    config_class: ClassVar[type]

    def __init__(self, cfg: ModelConfig, config=None):
        """``config``: the model's training config, an instance of ``config_class`` (None: its defaults, which is
        what a loaded model needs: sampling and encoding read no training config)."""
        super().__init__()
        self.check_config(cfg)
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            raise TypeError(f"a {self.kind} model's training config is a {self.config_class.__name__}, "
                            f"got a {type(config).__name__}")
        self.cfg = cfg
        self.config = config
        self.prior = make_prior(cfg.prior, cfg.latent_dim)
        # Multi-process training (agelab.distributed): this process's slice of the global batch; None = one process.
        self.shard: Shard | None = None
        # Set by the trainer for --compile: the nets then run only through forward (AGE.stacks_passes).
        self.compiled = False
        self.build(cfg)
        self.use_fast_ops(True)  # the nets are built plain (layers as written); a model runs their fast forms

    def use_fast_ops(self, on: bool) -> "GenerativeModel":
        """Whether the nets run the fast forms of their layers (:mod:`agelab.ops`): on from construction.

        Sets ``fast`` on every submodule that has it (the DCGAN nets). Off, every net runs its layers as
        written, the reference that the fast forms equal to float rounding: what ``print(model)`` shows,
        with every layer's forward hooks firing. Training, sampling and evaluation run what is set here.
        Returns the model.
        """
        for m in self.modules():
            if hasattr(m, "fast"):
                m.fast = on
        return self

    @classmethod
    def config_from(cls, train_cfg) -> object:
        """The model's training config (``config_class``) from a run's TrainConfig.

        Each field takes the TrainConfig field of its name, or of the name its :func:`option` gives (AGE's
        ``scale`` is ``game_scale``); a field declared ``option(default, None)`` keeps its default. The trainer
        builds every model's config this way, so it needs to know no model's options.
        """
        values = {}
        for f in dataclasses.fields(cls.config_class):
            name = f.metadata.get("option", f.name)
            if name is not None:
                values[f.name] = getattr(train_cfg, name)
        return cls.config_class(**values)

    def check_config(self, cfg: ModelConfig) -> None:
        """Raise ValueError when ``cfg`` describes no model of this class (before anything is built)."""
        if self.required_prior is not None and cfg.prior != self.required_prior:
            raise ValueError(f"{self.prior_note}: use prior {self.required_prior!r}, got {cfg.prior!r}")

    def build(self, cfg: ModelConfig) -> None:
        """Create and register the networks."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        """The players' moves of one training iteration, in order."""
        raise NotImplementedError

    # ---- use of a trained model -------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """x (B, C, S, S) -> codes (B, M). A model without an encoder (``has_encoder = False``) raises
        NotImplementedError saying so."""
        raise NotImplementedError(self.no_encoder_reason or f"a {self.kind} model has no encoder")

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """codes (B, M) -> images (B, C, S, S) in [-1, 1]."""
        raise NotImplementedError

    def reconstruct(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, c), c)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.prior.sample(n, device=self.device, generator=generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n unconditional samples g(z), z ~ prior (a conditional model's decode needs its condition)."""
        return self.decode(self.sample_latent(n, generator))

    # ---- batches --------------------------------------------------------------------
    def prepare_batch(self, images_u8: Tensor, channels_last: bool = False):
        """The trainer's uint8 images (B, C, S, S) -> the batch the phase losses take: here x in [-1, 1]."""
        x = to_float(images_u8)  # (B, C, S, S)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @staticmethod
    def split_batch(batch) -> tuple[Tensor, Tensor | None]:
        """A batch -> (x, condition): a tensor is x alone (c = None), a tuple is (x, c)."""
        if isinstance(batch, tuple):
            return batch
        return batch, None

    def batch_latent(self, b: int) -> Tensor:
        """Latent samples for a batch of b images (b, M).

        In a multi-process run every process draws the global batch (N*b) from the
        shared RNG stream and keeps its own rows: the run draws exactly the z of a
        single process with the global batch.
        """
        if self.shard is None:
            return self.sample_latent(b)
        return self.sample_latent(b * self.shard.world_size)[self.shard.rows(b * self.shard.world_size)]

    # ---- training hooks (no-ops unless a model keeps state beside its weights) ---------------------
    def train_state(self) -> dict[str, Tensor]:
        """What training changes besides the weights, checkpointed in state.pt (nothing by default)."""
        return {}

    def load_train_state(self, state: dict) -> None:
        """Restore what :meth:`train_state` saved (keys it does not know are ignored)."""

    def set_lr_factor(self, factor: float) -> None:
        """The trainer's learning rate / initial learning rate, set before every iteration (unused by default)."""

    # ---- the trainer's outputs ----------------------------------------------------------------
    @torch.no_grad()
    def write_grids(self, folder: Path, step: int, fixed_test: Tensor) -> None:
        """The periodic grids: 64 samples, and reconstructions of ``fixed_test`` (float, [-1, 1]) with an encoder."""
        from agelab.sampling import reconstruction_pairs, sample_images, save_grid

        folder.mkdir(exist_ok=True)
        was_training = self.training
        self.eval()
        save_grid(sample_images(self, 64, seed=0), folder / f"samples-{step:07d}.png")
        if self.has_encoder:
            save_grid(reconstruction_pairs(self, fixed_test), folder / f"recon-{step:07d}.png")
        self.train(was_training)

    @torch.no_grad()
    def finish_run(self, run_dir: Path, test_data, step: int, device: torch.device) -> dict:
        """Final samples, held-out reconstructions, interpolations, summary.json and report.html."""
        import json
        import time

        from agelab.report import write_report
        from agelab.sampling import (interpolation_rows, latent_interpolation_rows, reconstruction_errors,
                                     reconstruction_pairs, sample_images, save_grid)

        self.eval()
        x_test = to_float(test_data.images).to(device)
        save_grid(sample_images(self, 64, seed=0), run_dir / "samples.png")
        summary = {"step": step, "test_images": len(x_test)}
        if self.has_encoder:
            save_grid(reconstruction_pairs(self, x_test[:32]), run_dir / "reconstructions.png")
            pairs = min(8, len(x_test) // 2)  # tiny test splits have fewer than 16 images
            if pairs:
                save_grid(interpolation_rows(self, x_test[:pairs], x_test[pairs:2 * pairs], steps=8),
                          run_dir / "interpolations.png")
            summary["test_reconstruction"] = reconstruction_errors(self, x_test)
        else:  # no encoder (a DCGAN): interpolate between prior samples instead
            z = self.prior.sample(16, generator=torch.Generator().manual_seed(0)).to(device)  # (16, M)
            save_grid(latent_interpolation_rows(self, z[:8], z[8:], steps=8), run_dir / "interpolations.png")
        summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        write_report(run_dir)
        return summary
