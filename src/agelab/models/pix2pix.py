"""The colorization baseline: pix2pix (Isola et al. 2017) with noise maps, as in the AGE paper's figure 4.

    generator G(z, L) -> ab:  U-Net on [L, z maps]  (z from the same prior as the conditional AGE)
    discriminator D(ab | L):  PatchGAN on [L, ab], one logit per patch

Losses (pix2pix's: the vanilla GAN objective as binary cross-entropy on logits,
plus an L1 term with weight l1_weight, pix2pix's 100 (:class:`Pix2PixConfig`); ab in [-1, 1]
as for the AGE model):

    disc loss (minimised):  1/2 [ BCE(D(ab | L), 1) + BCE(D(G(z, L) | L), 0) ]
    gen loss  (minimised):  BCE(D(G(z, L) | L), 1) + l1_weight * mean |ab - G(z, L)|

Two phases per iteration, "disc" then "gen", one step each, in the same trainer
loop as AGE (:mod:`agelab.trainer`). Dropout (pix2pix's other noise source) is
active in training only; at inference (eval mode) the output depends on L and z
alone, so the diversity metrics measure what z does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from agelab.models.base import GenerativeModel, ModelConfig, Phase, frozen_bn_stats, option
from agelab.models.conditional import Colorization, _need_condition
from agelab.models.dcgan import bce, discriminator_objective
from agelab.nets.pix2pix import PatchDiscriminator, UNetGenerator


@dataclass(frozen=True)
class Pix2PixConfig:
    """pix2pix's training config: the weight of the generator's L1 term.

    No command-line option sets it (``--mu`` and ``--lam`` are the AGE game's), so a trained run uses pix2pix's
    lambda of 100, the paper's comparison.
    """

    l1_weight: float = option(100.0, None)  # pix2pix's lambda


class Pix2Pix(Colorization, GenerativeModel):
    """pix2pix colorization with noise maps: ``decode(z, L)`` -> ab; no encoder (no colour transfer)."""

    kind = "pix2pix"
    config_class = Pix2PixConfig
    has_encoder = False
    no_encoder_reason = "pix2pix has no encoder: colour transfer needs a conditional AGE (cage) model"

    def check_config(self, cfg: ModelConfig) -> None:
        if cfg.channels != 3:
            raise ValueError(f"pix2pix colorizes RGB images (3 channels), got {cfg.channels}")
        super().check_config(cfg)

    def build(self, cfg: ModelConfig) -> None:
        self.generator = UNetGenerator(cfg.latent_dim, cfg.image_size, cfg.width)
        self.discriminator = PatchDiscriminator(cfg.width)

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """G(z, L): (B, M), (B, 1, S, S) -> ab (B, 2, S, S) in [-1, 1]."""
        return self.generator(z, _need_condition(c, "decode"))

    # ---- the game -----------------------------------------------------------------
    def discriminator_loss(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Passes: G(z, L) without a graph, D on real and on generated ab."""
        x, c = self.split_batch(batch)
        with torch.no_grad():
            fake = self.decode(self.batch_latent(x.shape[0]), c)  # (B, 2, S, S)
        return discriminator_objective(self.discriminator(x, c), self.discriminator(fake, c))  # logits (B, 1, P, P)

    def generator_loss(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Passes: G(z, L), D on it (input gradients only: D is not stepped)."""
        x, c = self.split_batch(batch)
        fake = self.decode(self.batch_latent(x.shape[0]), c)  # (B, 2, S, S)
        with frozen_bn_stats(self.discriminator):
            logits = self.discriminator(fake, c)
        adv = bce(logits, 1.0)
        l1 = F.l1_loss(fake, x)
        loss = adv + self.config.l1_weight * l1
        return loss, {"loss": loss.detach(), "adv": adv.detach(), "l1": l1.detach()}

    def phases(self) -> list[Phase]:
        return [Phase("disc", self.discriminator, self.discriminator_loss, repeats=1),
                Phase("gen", self.generator, self.generator_loss, repeats=1)]
