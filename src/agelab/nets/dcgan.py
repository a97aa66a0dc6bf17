"""DCGAN-type encoder and generator (paper 3.1; Radford et al. 2016).

The encoder is DCGAN's discriminator with an M-dimensional output instead of the
final sigmoid; the projection onto the prior's support (the unit sphere) is done
by the model (:mod:`agelab.models.age`), not here. Both nets work for any square
power-of-two image size >= 16 and any channel count. For size S there are
``log2(S) - 2`` stride-2 stages; at width w the feature maps are

    generator: z (M,1,1) -> (w*2^(n-1), 4, 4) -> ... -> (w, S/2, S/2) -> (C, S, S), tanh
    encoder:   x (C,S,S) -> (w, S/2, S/2) -> ... -> (w*2^(n-1), 4, 4) -> (M,)

``style="authors"`` changes the two ends as the authors' released 32x32 nets have them
(``--nets authors``): the generator's last stride-2 stage keeps w channels at full resolution
(with batch norm and ReLU) and a 1x1 convolution with bias maps them to C; the encoder's head is
a 4x4 stride-2 convolution to (M, 2, 2) followed by 2x2 average pooling, instead of one 4x4
convolution over the whole (4, 4) map. The stages in between are the same.

Each net's ``forward`` runs its layers as written (``print(net)`` shows them), unless its
``fast`` attribute is set: then the same layers run with the two at the ends in the forms of
:mod:`agelab.ops`, the same sums in another order. The layer at the code end (g's first, e's
head: a matrix product, ``code_layer``) and the one at the image end (g's last, e's first: a
product and an overlap-add on CPU, inside ``body``) use their layers' weights directly, so
forward hooks on those two layers fire only without ``fast``. A net is plain when built; every
model switches its nets to ``fast`` (:meth:`agelab.models.base.GenerativeModel.use_fast_ops`).
The weights, and so the state_dict and checkpoints, are the same either way.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import Tensor, nn

from agelab.ops import code_to_map, from_image, map_to_code, to_image

if TYPE_CHECKING:
    from agelab.models.base import ModelConfig

NET_STYLES = ("dcgan", "authors")


def _n_stages(image_size: int) -> int:
    n = int(round(math.log2(image_size))) - 2
    if image_size < 16 or 2 ** (n + 2) != image_size:
        raise ValueError(f"image size must be a power of two >= 16, got {image_size}")
    return n


def _check_style(style: str) -> str:
    if style not in NET_STYLES:
        raise ValueError(f"net style must be one of {', '.join(NET_STYLES)}, got {style!r}")
    return style


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
    """g: latent (B, M) -> image (B, C, S, S) in [-1, 1]; ``fast``: the end layers in agelab.ops' forms."""

    def __init__(self, latent_dim: int, channels: int, image_size: int = 32, width: int = 64, fast: bool = False,
                 style: str = "dcgan"):
        super().__init__()
        n = _n_stages(image_size)
        self.style = _check_style(style)
        ch = width * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False),  # (ch, 4, 4)
            nn.BatchNorm2d(ch),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n - 1):  # each stage doubles the side and halves the channels
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        if style == "authors":  # full resolution at w channels, then a 1x1 convolution to the image
            layers += [nn.ConvTranspose2d(ch, ch, 4, 2, 1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
                       nn.Conv2d(ch, channels, 1, bias=True), nn.Tanh()]  # (C, S, S)
        else:
            layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]  # (C, S, S)
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        self.fast = fast
        dcgan_init_(self)

    def forward(self, z: Tensor) -> Tensor:
        z = z.reshape(z.shape[0], self.latent_dim, 1, 1)  # (B, M, 1, 1)
        if self.fast:
            return self.body(self.code_layer(z))
        return self.net(z)  # (B, C, S, S)

    def extra_repr(self) -> str:
        return f"fast={self.fast}, style={self.style}"

    def code_layer(self, z: Tensor) -> Tensor:
        """The fast form of net[0]: code (B, M) -> (B, ch, 4, 4) before batch norm, as a matrix product."""
        return code_to_map(z, self.net[0].weight)

    def body(self, h: Tensor) -> Tensor:
        """The fast form of net[1:]: (B, ch, 4, 4) -> image (B, C, S, S), the last convolution as ``to_image``
        (the authors' style ends in a 1x1 convolution, which runs as it is)."""
        if self.style == "authors":
            return self.net[1:](h)
        return self.net[-1](to_image(self.net[1:-2](h), self.net[-2].weight))


class DCGANEncoder(nn.Module):
    """e before projection: image (B, C, S, S) -> raw code (B, M); ``fast``: the end layers in agelab.ops' forms."""

    def __init__(self, latent_dim: int, channels: int, image_size: int = 32, width: int = 64, fast: bool = False,
                 style: str = "dcgan"):
        super().__init__()
        n = _n_stages(image_size)
        self.style = _check_style(style)
        ch = width
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(n - 1):  # each stage halves the side and doubles the channels
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        self.features = nn.Sequential(*layers)  # (B, w*2^(n-1), 4, 4)
        if style == "authors":  # (B, M, 2, 2), averaged
            self.head: nn.Module = nn.Sequential(nn.Conv2d(ch, latent_dim, 4, 2, 1, bias=True), nn.AvgPool2d(2))
        else:
            self.head = nn.Conv2d(ch, latent_dim, 4, 1, 0, bias=True)  # (B, M, 1, 1)
        self.fast = fast
        dcgan_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        if self.fast:
            return self.code_layer(self.body(x))
        return self.head(self.features(x)).flatten(1)  # (B, M)

    def extra_repr(self) -> str:
        return f"fast={self.fast}, style={self.style}"

    def body(self, x: Tensor) -> Tensor:
        """The fast form of ``features``: (B, C, S, S) -> (B, w*2^(n-1), 4, 4), the first layer as ``from_image``."""
        return self.features[1:](from_image(x, self.features[0].weight))

    def code_layer(self, h: Tensor) -> Tensor:
        """The fast form of ``head``: (B, w*2^(n-1), 4, 4) -> (B, M), as a matrix product (the authors' head,
        a strided convolution and pooling, runs as it is)."""
        if self.style == "authors":
            return self.head(h).flatten(1)
        return map_to_code(h, self.head.weight, self.head.bias)


def dcgan_nets(cfg: "ModelConfig", encoder_out: int | None = None) -> tuple[DCGANEncoder, DCGANGenerator]:
    """The (encoder, generator) pair of ``cfg``'s size, width and net style, initialised in this order.

    ``encoder_out``: the encoder's output size, the latent size by default (a VAE's 2M, a GAN
    discriminator's single logit)."""
    size = (cfg.channels, cfg.image_size, cfg.width)
    encoder = DCGANEncoder(cfg.latent_dim if encoder_out is None else encoder_out, *size, style=cfg.nets)
    return encoder, DCGANGenerator(cfg.latent_dim, *size, style=cfg.nets)
