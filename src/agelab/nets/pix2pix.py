"""pix2pix networks (Isola et al. 2017) for the colorization baseline, with the AGE paper's noise maps.

U-Net generator: input [L, z maps] (1 + M, S, S) (the same constant noise maps
as the conditional AGE generator, paper 3.2), output ab (2, S, S) with tanh.
Encoder: 4x4 stride-2 convolutions C(w)-C(2w)-C(4w)-C(8w)-C(8w)... down to 1x1
(log2 S stages; no batch norm on the first and the innermost), LeakyReLU 0.2;
decoder: mirrored 4x4 stride-2 transposed convolutions with batch norm and ReLU,
each taking the concatenation with the encoder feature of the same size (skip
connections); dropout 0.5 on the three innermost decoder stages, as in pix2pix
(active only in training mode).

PatchGAN discriminator on [L, ab] (3, S, S): pix2pix's 70x70 design
C(w)-C(2w)-C(4w) with stride 2, C(8w) with stride 1, a 1-channel 4x4
convolution: a (B, 1, P, P) map of real/fake logits (P = 6 at S = 64).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from agelab.nets.colorization import with_noise
from agelab.nets.dcgan import dcgan_init_


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, norm: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class UNetGenerator(nn.Module):
    """G(z, L): (z (B, M), L (B, 1, S, S)) -> ab (B, 2, S, S) in [-1, 1]. S a power of two >= 16."""

    def __init__(self, latent_dim: int, image_size: int = 64, width: int = 32):
        super().__init__()
        n = int(round(math.log2(image_size)))
        if image_size < 16 or 2 ** n != image_size:
            raise ValueError(f"image size must be a power of two >= 16, got {image_size}")
        chans = [min(width * 2 ** i, width * 8) for i in range(n)]  # encoder outputs, S/2 ... 1
        self.downs = nn.ModuleList()
        cin = 1 + latent_dim
        for i, c in enumerate(chans):
            self.downs.append(_Down(cin, c, norm=0 < i < n - 1))
            cin = c
        self.ups = nn.ModuleList()
        for j in range(n - 1):  # from the innermost (1x1) up to S/2
            i = n - 1 - j  # the encoder level this stage's input comes from
            c_in = chans[i] if j == 0 else 2 * chans[i]
            self.ups.append(_Up(c_in, chans[i - 1], dropout=j < 3))
        self.out = nn.Sequential(nn.ConvTranspose2d(2 * chans[0], 2, 4, 2, 1), nn.Tanh())  # (2, S, S)
        self.latent_dim = latent_dim
        dcgan_init_(self)

    def forward(self, z: Tensor, lightness: Tensor) -> Tensor:
        h = with_noise(lightness, z)  # (B, 1 + M, S, S)
        skips = []
        for down in self.downs:
            h = down(h)
            skips.append(h)
        h = skips.pop()  # innermost (B, 8w, 1, 1)
        for up in self.ups:
            h = torch.cat([up(h), skips.pop()], dim=1)
        return self.out(h)  # (B, 2, S, S)


class PatchDiscriminator(nn.Module):
    """D(ab | L): [L, ab] (B, 3, S, S) -> patch logits (B, 1, P, P)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * w, 8 * w, 4, 1, 1, bias=False), nn.BatchNorm2d(8 * w), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8 * w, 1, 4, 1, 1),
        )
        dcgan_init_(self)

    def forward(self, ab: Tensor, lightness: Tensor) -> Tensor:
        return self.net(torch.cat([lightness, ab], dim=1))
