"""DCGAN-type encoder and generator (paper 3.1; Radford et al. 2016).

The encoder is DCGAN's discriminator with an M-dimensional output instead of the
final sigmoid; the projection onto the prior's support (the unit sphere) is done
by the model (:mod:`agelab.models.age`), not here. Both nets work for any square
power-of-two image size >= 16 and any channel count. For size S there are
``log2(S) - 2`` stride-2 stages; at width w the feature maps are

    generator: z (M,1,1) -> (w*2^(n-1), 4, 4) -> ... -> (w, S/2, S/2) -> (C, S, S), tanh
    encoder:   x (C,S,S) -> (w, S/2, S/2) -> ... -> (w*2^(n-1), 4, 4) -> (M,)
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agelab.ops import from_image, to_image


def _n_stages(image_size: int) -> int:
    n = int(round(math.log2(image_size))) - 2
    if image_size < 16 or 2 ** (n + 2) != image_size:
        raise ValueError(f"image size must be a power of two >= 16, got {image_size}")
    return n


def dcgan_init_(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """g: latent (B, M) -> image (B, C, S, S) in [-1, 1]."""

    def __init__(self, latent_dim: int, channels: int, image_size: int = 32, width: int = 64):
        super().__init__()
        n = _n_stages(image_size)
        ch = width * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False),  # (ch, 4, 4)
            nn.BatchNorm2d(ch),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n - 1):  # each stage doubles the side and halves the channels
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]  # (C, S, S)
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        dcgan_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        return self._rest(self._first_layer(z))  # (B, C, S, S)

    def forward_two(self, z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
        """(g(z1), g(z2)) with the first layer's two matrix products taken as one, on the stacked codes.

        The same math as two calls: batch norm still normalises each batch with its own
        statistics (z1's batch first, as in two calls). A generator update runs g on z and
        on e(x); one (2B, M) x (M, 16 ch) product instead of two (B, M) ones saves a product
        in the forward and one in the weight gradient (docs/performance.md). The halves are
        taken with ``split``, whose backward concatenates their gradients; indexing (``h[:b1]``)
        would make each half's backward a zero-filled full-size tensor, added afterwards.
        """
        b1, b2 = z1.shape[0], z2.shape[0]
        h = self._first_layer(torch.cat([z1.reshape(b1, -1), z2.reshape(b2, -1)]))  # (B1 + B2, ch, 4, 4)
        h1, h2 = h.split([b1, b2])  # batch slices keep h's memory layout
        return self._rest(h1), self._rest(h2)

    def _first_layer(self, z: Tensor) -> Tensor:
        """(B, M) -> (B, ch, 4, 4), before batch norm.

        A 4x4 transposed convolution of a 1x1 input is a matrix product:
        h[b, c, i, j] = sum_m z[b, m] W[m, c, i, j]. As one (B, M) x (M, 16 ch) product it is
        the same math, run by a dense matrix-product kernel instead of oneDNN's transposed
        convolution, whose kernels are poorly suited to a 1x1 input (docs/performance.md).
        The product is taken in the weight's memory order, so neither W nor h is copied:
        channels-last weights (M, 4, 4, ch in memory) give channels-last activations.
        """
        w = self.net[0].weight  # (M, ch, 4, 4)
        b, ch = z.shape[0], w.shape[1]
        z = z.reshape(b, self.latent_dim).to(w.dtype)
        if w.is_contiguous(memory_format=torch.channels_last):
            return (z @ w.permute(0, 2, 3, 1).reshape(self.latent_dim, -1)).view(b, 4, 4, ch).permute(0, 3, 1, 2)
        return (z @ w.reshape(self.latent_dim, -1)).view(b, ch, 4, 4)

    def _rest(self, h: Tensor) -> Tensor:
        """(B, ch, 4, 4) before the first batch norm -> image (B, C, S, S)."""
        h = self.net[1:-2](h)  # (B, w, S/2, S/2)
        # The last layer (w -> C image channels) as a matrix product and an overlap-add on CPU (ops/image_end.py).
        return torch.tanh(to_image(h, self.net[-2].weight))


class DCGANEncoder(nn.Module):
    """e (before projection): image (B, C, S, S) -> raw code (B, M)."""

    def __init__(self, latent_dim: int, channels: int, image_size: int = 32, width: int = 64):
        super().__init__()
        n = _n_stages(image_size)
        ch = width
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(n - 1):  # each stage halves the side and doubles the channels
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        self.features = nn.Sequential(*layers)  # (B, w*2^(n-1), 4, 4)
        self.head = nn.Conv2d(ch, latent_dim, 4, 1, 0, bias=True)  # (B, M, 1, 1)
        dcgan_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self._head(self._features(x))  # (B, M)

    def forward_two(self, x1: Tensor, x2: Tensor, second: AbstractContextManager | None = None) -> tuple[Tensor, Tensor]:
        """(e(x1), e(x2)) with the head's two matrix products taken as one, on the stacked feature maps.

        The same math as two calls. The features of x2 are computed inside the context manager
        ``second`` (the encoder phase passes ``frozen_bn_stats`` there, so that generated images
        leave batch norm's running statistics alone). Saves a product in the forward, the input
        gradient and the weight gradient of the head (docs/performance.md).
        """
        h1 = self._features(x1)
        with second or nullcontext():
            h2 = self._features(x2)
        out = self._head(h1, h2)  # (B1 + B2, M)
        return tuple(out.split([h1.shape[0], h2.shape[0]]))

    def _features(self, x: Tensor) -> Tensor:
        """(B, C, S, S) -> (B, w*2^(n-1), 4, 4)."""
        # The first layer's input gradient runs as a matrix product and an overlap-add on CPU (ops/image_end.py).
        return self.features[1:](from_image(x, self.features[0].weight))

    def _head(self, *hs: Tensor) -> Tensor:
        """The head on the feature maps of one or more batches (stacked): (B1 + B2 + ..., M).

        A 4x4 convolution of a 4x4 map is a matrix product over the flattened map: the same
        math, run by a dense matrix-product kernel instead of a convolution kernel that has a
        single output position to compute (docs/performance.md). It is taken in
        the memory order of the maps and the weight, so that neither is copied.
        """
        w = self.head.weight  # (M, ch, 4, 4)
        if w.is_contiguous(memory_format=torch.channels_last) and all(
                h.is_contiguous(memory_format=torch.channels_last) for h in hs):
            rows, wm = [h.permute(0, 2, 3, 1).flatten(1) for h in hs], w.permute(0, 2, 3, 1).flatten(1)
        else:
            rows, wm = [h.flatten(1) for h in hs], w.flatten(1)
        return F.linear(rows[0] if len(rows) == 1 else torch.cat(rows), wm, self.head.bias)
