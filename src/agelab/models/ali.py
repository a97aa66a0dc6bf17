"""Baseline: ALI / BiGAN (Dumoulin et al. 2017; Donahue et al. 2017), the paper's main
comparison (fig. 3, 6, the MNIST log-likelihood table, the SVHN probe), on the AGE networks.

    encoder e(x):        the AGE encoder, projected onto the prior's support (deterministic, as BiGAN's)
    generator g(z):      the AGE generator
    discriminator D(x, z): x -> the AGE encoder's body with F = 4w outputs; z -> a two-layer MLP (F);
                           the concatenation -> a two-layer MLP -> one logit

Losses (non-saturating, binary cross-entropy on logits):

    disc loss:     1/2 [ BCE(D(x, e(x)), 1) + BCE(D(g(z), z), 0) ]
    enc+gen loss:  BCE(D(x, e(x)), 0) + BCE(D(g(z), z), 1)

Two phases per iteration, "disc" then "encgen" (encoder and generator in one step, as in
ALI). Reconstructions g(e(x)) are not trained for: they come out of the game alone, which
is the weakness the AGE paper points out (fig. 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from agelab.models.base import GenerativeModel, ModelConfig, ModuleGroup, Phase
from agelab.models.dcgan import bce, discriminator_objective
from agelab.nets.dcgan import DCGANEncoder, dcgan_nets


class JointDiscriminator(nn.Module):
    """D(x, z): (B, C, S, S), (B, M) -> (B, 1) logits."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int, style: str = "dcgan"):
        super().__init__()
        f = 4 * width
        self.x_net = DCGANEncoder(f, channels, image_size, width, style=style)  # (B, F)
        self.z_net = nn.Sequential(nn.Linear(latent_dim, f), nn.LeakyReLU(0.2), nn.Linear(f, f), nn.LeakyReLU(0.2))
        self.joint = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(2 * f, 2 * f), nn.LeakyReLU(0.2), nn.Linear(2 * f, 1))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.joint(torch.cat([self.x_net(x), self.z_net(z.to(x.dtype))], dim=1))


@dataclass(frozen=True)
class ALIConfig:
    """ALI's training config: empty, as its losses have no weights and its phases one step each (the AGE game's
    options, --mu, --lam, ..., do not apply to it; the optimisers' --lr and --beta1 are the trainer's)."""


class ALI(GenerativeModel):
    """ALI/BiGAN on the AGE networks."""

    kind = "ali"
    config_class = ALIConfig

    def build(self, cfg: ModelConfig) -> None:
        self.encoder, self.generator = dcgan_nets(cfg)
        self.discriminator = JointDiscriminator(cfg.latent_dim, cfg.channels, cfg.image_size, cfg.width, cfg.nets)
        self.encgen = ModuleGroup(self.encoder, self.generator)  # stepped together

    def encode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.prior.project(self.encoder(x))  # (B, M), on the prior's support

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return self.generator(z)  # (B, C, S, S) in [-1, 1]

    def _pairs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """D's logits on real pairs (x, e(x)) and generated pairs (g(z), z), (B, 1) each."""
        z = self.batch_latent(x.shape[0])  # (B, M)
        return self.discriminator(x, self.encode(x)), self.discriminator(self.decode(z), z)

    def discriminator_loss(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Passes: e(x) and g(z) without graphs, D on both pairs."""
        x, _ = self.split_batch(batch)
        z = self.batch_latent(x.shape[0])
        with torch.no_grad():
            z_real, x_fake = self.encode(x), self.decode(z)
        return discriminator_objective(self.discriminator(x, z_real), self.discriminator(x_fake, z))

    def encoder_generator_loss(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Passes: e(x), g(z), D on both pairs (input gradients only: D is not stepped)."""
        x, _ = self.split_batch(batch)
        real, fake = self._pairs(x)
        loss = bce(real, 0.0) + bce(fake, 1.0)
        return loss, {"loss": loss.detach()}

    def phases(self) -> list[Phase]:
        return [Phase("disc", self.discriminator, self.discriminator_loss),
                Phase("encgen", self.encgen, self.encoder_generator_loss)]
