"""Baseline: DCGAN (Radford et al. 2016), the paper's fig. 5 comparison, in agelab's trainer.

    generator g(z):      the AGE generator (agelab.nets.dcgan.DCGANGenerator), z ~ the run's prior
    discriminator D(x):  the AGE encoder's body with one output logit (DCGANEncoder with M = 1)

Losses (the non-saturating GAN of Goodfellow et al. 2014, as binary cross-entropy on logits):

    disc loss:  1/2 [ BCE(D(x), 1) + BCE(D(g(z)), 0) ]
    gen loss:   BCE(D(g(z)), 1)

Two phases per iteration, "disc" then "gen", one step each. DCGAN has no encoder:
reconstructions, latent interpolation between images and linear probes are not
defined for it (``encode`` says so; ``agelab eval`` skips those metrics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from agelab.models.base import GenerativeModel, ModelConfig, Phase
from agelab.nets.dcgan import dcgan_nets


def bce(logits: Tensor, target: float) -> Tensor:
    """Binary cross-entropy of logits against a constant label (mean over the batch)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_objective(real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The GAN discriminator's loss 1/2 [BCE(real, 1) + BCE(fake, 0)] and its logs (mean D outputs).

    Shared by every discriminator in agelab: DCGAN's D(x), ALI's D(x, z), pix2pix's PatchGAN.
    """
    loss = 0.5 * (bce(real_logits, 1.0) + bce(fake_logits, 0.0))
    return loss, {"loss": loss.detach(), "d_real": torch.sigmoid(real_logits).mean().detach(),
                  "d_fake": torch.sigmoid(fake_logits).mean().detach()}


@dataclass(frozen=True)
class DCGANConfig:
    """The DCGAN's training config: empty, as its losses have no weights and its phases one step each (the AGE
    game's options, --mu, --lam, ..., do not apply to it; the optimisers' --lr and --beta1 are the trainer's)."""


class DCGAN(GenerativeModel):
    """A DCGAN on the AGE networks; ``decode``/``sample`` as for AGE, no ``encode``."""

    kind = "dcgan"
    config_class = DCGANConfig
    has_encoder = False
    no_encoder_reason = ("a DCGAN has no encoder: reconstructions, interpolation between images and "
                         "linear probes need an encoder model (age, vae or ali)")

    def build(self, cfg: ModelConfig) -> None:
        self.discriminator, self.generator = dcgan_nets(cfg, encoder_out=1)  # D: (B, 1) logits

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return self.generator(z)  # (B, C, S, S) in [-1, 1]

    def discriminator_loss(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Passes: g(z) without a graph, D on x and on g(z)."""
        x, _ = self.split_batch(batch)
        with torch.no_grad():
            fake = self.decode(self.batch_latent(x.shape[0]))  # (B, C, S, S)
        return discriminator_objective(self.discriminator(x), self.discriminator(fake))  # logits (B, 1)

    def generator_loss(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Passes: g(z), D on it (input gradients only: D is not stepped)."""
        x, _ = self.split_batch(batch)
        loss = bce(self.discriminator(self.decode(self.batch_latent(x.shape[0]))), 1.0)
        return loss, {"loss": loss.detach()}

    def phases(self) -> list[Phase]:
        return [Phase("disc", self.discriminator, self.discriminator_loss),
                Phase("gen", self.generator, self.generator_loss)]
