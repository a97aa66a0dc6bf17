"""Networks of the conditional AGE for colorization (paper 3.2).

Generator g(z | L): the lightness L (B, 1, S, S) concatenated with z (B, M)
expanded to M constant maps of L's size, then a ResNet-type network (Johnson et
al. 2016, as the paper cites): a 3x3 convolution, two 4x4 stride-2 convolutions
down, ``res_blocks`` residual blocks at S/4, two 4x4 stride-2 transposed
convolutions back up and a 3x3 convolution to the two ab channels with tanh
(Johnson's 9x9/7x7 outer kernels, reflection padding and resize-convolutions are
left out for their cost on a CPU; own choice, measured: docs/performance.md). At
width w the feature maps are

    [L, z maps] (1+M, S, S) -> (w, S, S) -> (2w, S/2, S/2) -> (4w, S/4, S/4) x res_blocks
        -> (2w, S/2, S/2) -> (w, S, S) -> ab (2, S, S) in [-1, 1]

Encoder e(x | L) (before the projection onto the sphere): the DCGAN-type encoder
(:class:`agelab.nets.dcgan.DCGANEncoder`) with 3 input channels on the
concatenation [L, ab], i.e. the image in (normalised) Lab space.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from agelab.nets.dcgan import DCGANEncoder, dcgan_init_


def noise_maps(z: Tensor, like: Tensor) -> Tensor:
    """z (B, M) -> M constant maps (B, M, H, W) of ``like``'s spatial size and dtype (an expanded view)."""
    b, m = z.shape
    return z.to(like.dtype).view(b, m, 1, 1).expand(b, m, *like.shape[-2:])


def with_noise(lightness: Tensor, z: Tensor) -> Tensor:
    """The generator input [L, z maps] (B, 1 + M, H, W)."""
    return torch.cat([lightness, noise_maps(z, lightness)], dim=1)


class ResBlock(nn.Module):
    """x + conv-bn-relu-conv-bn(x), 3x3 convolutions (Johnson et al. 2016)."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _bn_relu(ch: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(ch), nn.ReLU(inplace=True)]


class ColorizationGenerator(nn.Module):
    """g(z | L): (z (B, M), L (B, 1, S, S) in [-1, 1]) -> ab (B, 2, S, S) in [-1, 1]."""

    def __init__(self, latent_dim: int, width: int = 32, res_blocks: int = 6):
        super().__init__()
        w = width
        layers: list[nn.Module] = [nn.Conv2d(1 + latent_dim, w, 3, 1, 1, bias=False), *_bn_relu(w)]  # (w, S, S)
        layers += [nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False), *_bn_relu(2 * w)]  # (2w, S/2, S/2)
        layers += [nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False), *_bn_relu(4 * w)]  # (4w, S/4, S/4)
        layers += [ResBlock(4 * w) for _ in range(res_blocks)]
        layers += [nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False), *_bn_relu(2 * w)]  # (2w, S/2, S/2)
        layers += [nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), *_bn_relu(w)]  # (w, S, S)
        layers += [nn.Conv2d(w, 2, 3, 1, 1), nn.Tanh()]  # ab (2, S, S)
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        dcgan_init_(self)

    def forward(self, z: Tensor, lightness: Tensor) -> Tensor:
        return self.net(with_noise(lightness, z))  # (B, 2, S, S)


class ConditionalEncoder(DCGANEncoder):
    """e(x | L) before projection: [L, ab] (B, 3, S, S) -> raw code (B, M)."""

    def __init__(self, latent_dim: int, image_size: int = 64, width: int = 32):
        super().__init__(latent_dim, 3, image_size, width)

    def forward(self, ab: Tensor, lightness: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(torch.cat([lightness, ab], dim=1))  # (B, M)
