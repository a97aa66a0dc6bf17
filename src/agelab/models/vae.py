"""Baseline: the variational autoencoder (Kingma & Welling 2014), paper fig. 3 and the MNIST
log-likelihood table, on the AGE networks.

    encoder q(z|x) = N(mu(x), diag exp(logvar(x))):  the AGE encoder with 2M outputs (mu, logvar)
    decoder p(x|z) = N(g(z), sigma^2 I):             the AGE generator; sigma^2 the batch's mean squared error
    prior   p(z)   = N(0, I)                         (--prior gaussian)

Loss (the negative ELBO per image, divided by the number of pixels D so that it reads in
nats per pixel; one phase "vae" steps encoder and generator together):

    [ ||x - g(z)||^2 / (2 sigma^2) + D log sigma + KL(q(z|x) || N(0, I)) ] / D,
    z = mu + exp(logvar / 2) * eps  (reparametrisation)

sigma is the "optimal sigma" calibrated decoder of Rybkin et al. (2021): for one shared
sigma the maximum-likelihood sigma^2 is the mean squared error, so it is set to the batch's
(as a constant, no gradient) and no pixel-noise weight has to be tuned by hand. (A learned
log-sigma at the paper's learning rate of 2e-4 would need some 10,000 steps to get there.)
The AIS log-likelihood chooses its own sigma on validation images, as for every decoder.
``encode`` returns the posterior mean mu(x), which reconstructions, the linear probes and
interpolation use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from agelab.models.base import GenerativeModel, ModelConfig, ModuleGroup, Phase
from agelab.nets.dcgan import dcgan_nets


MIN_VARIANCE = 1e-6  # floor of sigma^2 ([-1, 1] pixel units)


@dataclass(frozen=True)
class VAEConfig:
    """The VAE's training config: empty, as the negative ELBO has no weights (the decoder's sigma is the batch's;
    the AGE game's options, --mu, --lam, ..., do not apply to it; --lr and --beta1 are the trainer's)."""


class VAE(GenerativeModel):
    """A Gaussian VAE on the AGE networks."""

    kind = "vae"
    config_class = VAEConfig
    required_prior = "gaussian"
    prior_note = "the VAE's prior is N(0, I)"

    def build(self, cfg: ModelConfig) -> None:
        self.encoder, self.generator = dcgan_nets(cfg, encoder_out=2 * cfg.latent_dim)  # e: (B, 2M)
        self.trained = ModuleGroup(self.encoder, self.generator)  # stepped together by the one phase

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of q(z|x), each (B, M)."""
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def encode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.posterior(x)[0]  # (B, M), the posterior mean

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return self.generator(z)  # (B, C, S, S), the decoder's mean g(z)

    def loss(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        """Passes: encoder on x, generator on the sampled z."""
        x, _ = self.split_batch(batch)
        mu, logvar = self.posterior(x)  # (B, M) each
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        x_rec = self.decode(z)  # (B, C, S, S)
        d = x[0].numel()
        sq = (x_rec.float() - x.float()).pow(2).flatten(1).sum(1)  # (B,)
        var = (sq.mean() / d).detach().clamp_min(MIN_VARIANCE)  # sigma^2 = the batch's MSE
        nll = sq / (2 * var) + 0.5 * d * (var.log() + math.log(2 * math.pi))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)  # (B,)
        loss = (nll + kl).mean() / d
        return loss, {"loss": loss.detach(), "mse": (sq.mean() / d).detach(), "kl": kl.mean().detach(),
                      "sigma": var.sqrt()}

    def phases(self) -> list[Phase]:
        return [Phase("vae", self.trained, self.loss)]
