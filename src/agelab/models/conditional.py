"""Conditional AGE for colorization (paper 3.2): x = the ab channels of an image, condition c = its lightness L.

    encoder e(x | L):  [L, ab] -> unit sphere (S^{M-1}, M = 3 in the paper)
    generator g(z | L): [L, z maps] -> ab

The game is the unconditional one, unchanged (:class:`agelab.models.age.AGE`:
``encoder_loss``, ``generator_loss``, ``divergence``, ``phases``): a training
batch is the pair (ab, L), every encoder and generator pass is conditioned on the
batch's own L, and the divergences D(e(X)) and D(e(g(Z))) are computed over the
whole batch of codes, which mixes many different L ("unconditionally", paper 3.2).
The reconstruction terms become conditional:

    L_X = mean |ab - g(e(ab | L) | L)|,   L_Z = mean_b ||z - e(g(z | L) | L)||^2

This module overrides only what differs: the networks, ``encode``/``decode`` (which
take L), ``prepare_batch`` (uint8 RGB -> Lab, :mod:`agelab.colorspace`) and the run's grids
and final outputs (colorizations; :class:`Colorization`, shared with pix2pix).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from agelab.colorspace import uint8_to_lab
from agelab.models.age import AGE
from agelab.models.base import ModelConfig
from agelab.nets.colorization import ColorizationGenerator, ConditionalEncoder


class Colorization:
    """Mixin of the colorization models (before :class:`~agelab.models.base.GenerativeModel` in the bases):
    conditional on the lightness L of RGB data, a training batch is (ab, L), normalised to [-1, 1], and the
    trainer's grids and final outputs are colorizations (:mod:`agelab.colorize`)."""

    conditional = True

    def prepare_batch(self, images_u8: Tensor, channels_last: bool = False) -> tuple[Tensor, Tensor]:
        """uint8 RGB (B, 3, S, S) -> (ab (B, 2, S, S), L (B, 1, S, S)): the data sample and its condition."""
        lightness, ab = uint8_to_lab(images_u8)
        if channels_last:
            lightness = lightness.contiguous(memory_format=torch.channels_last)
            ab = ab.contiguous(memory_format=torch.channels_last)
        return ab, lightness

    def write_grids(self, folder: Path, step: int, fixed_test: Tensor) -> None:
        """Gray input, then 8 colorizations, for 8 of the held-out images."""
        from agelab.colorize import write_colorization_grids

        return write_colorization_grids(self, folder, step, fixed_test)

    def finish_run(self, run_dir: Path, test_data, step: int, device: torch.device) -> dict:
        """Colorizations, colour transfer (with an encoder), colorization metrics, summary.json and report.html."""
        from agelab.colorize import finish_colorization_run

        return finish_colorization_run(self, run_dir, test_data, step, device)


def _need_condition(c: Tensor | None, what: str) -> Tensor:
    if c is None:
        raise TypeError(f"{what} of a colorization model needs the condition: the lightness L (B, 1, S, S)")
    return c


class ConditionalAGE(Colorization, AGE):
    """AGE with encoder e(ab | L) and generator g(z | L); images as (ab, L) in [-1, 1] (:mod:`agelab.colorspace`)."""

    kind = "cage"
    model_fields = ("res_blocks",)
    stacks_passes = False  # encode and decode take L: the stacked passes would run the nets without it

    @staticmethod
    def build_networks(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
        if cfg.channels != 3:
            raise ValueError(f"the conditional AGE colorizes RGB images (3 channels), got {cfg.channels}")
        encoder = ConditionalEncoder(cfg.latent_dim, cfg.image_size, cfg.width)
        generator = ColorizationGenerator(cfg.latent_dim, cfg.width, cfg.res_blocks)
        return encoder, generator

    def encode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """e(ab | L): (B, 2, S, S), (B, 1, S, S) -> (B, M) on the prior's support."""
        return self.prior.project(self.encoder(x, _need_condition(c, "encode")))

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """g(z | L): (B, M), (B, 1, S, S) -> ab (B, 2, S, S) in [-1, 1]."""
        return self.generator(z, _need_condition(c, "decode"))
