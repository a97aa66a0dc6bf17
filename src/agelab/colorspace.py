"""Lab colour space for the colorization models (paper 3.2), via kornia's conversions.

The conditional models see an image as its lightness L (the condition) and its
colour channels ab (the data sample x). Both are normalised to [-1, 1]:

    L_n  = L / 50 - 1        L in [0, 100] (CIE L*, D65)
    ab_n = ab / AB_SCALE     AB_SCALE = 110; the ab of sRGB colours lie within about [-87, 99] (a) and [-108, 95] (b)

so a tanh generator output covers every sRGB colour. On the way back, ab is
scaled up and kornia's ``lab_to_rgb`` clamps the RGB result to [0, 1] (an ab
pair outside the sRGB gamut for its L gives a clipped, valid colour).

The conversions run in float32 (kornia's Lab formulas need it for a tight round
trip; under bf16 autocast they are computed in fp32 anyway).
"""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab
from torch import Tensor

AB_SCALE = 110.0
L_SCALE = 50.0


def rgb_to_lab_normalised(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """RGB in [0, 1] (B, 3, H, W) -> (L_n (B, 1, H, W), ab_n (B, 2, H, W)), both in [-1, 1]."""
    lab = rgb_to_lab(rgb.float().clamp(0, 1))  # (B, 3, H, W): L in [0, 100], a/b roughly [-110, 110]
    lightness, ab = lab[:, :1], lab[:, 1:]
    return lightness / L_SCALE - 1.0, (ab / AB_SCALE).clamp(-1, 1)


def lab_normalised_to_rgb(lightness: Tensor, ab: Tensor) -> Tensor:
    """(L_n (B, 1, H, W), ab_n (B, 2, H, W)) in [-1, 1] -> RGB in [0, 1] (B, 3, H, W), clamped to the gamut."""
    lab = torch.cat([(lightness.float().clamp(-1, 1) + 1.0) * L_SCALE, ab.float().clamp(-1, 1) * AB_SCALE], dim=1)
    return lab_to_rgb(lab, clip=True)


def uint8_to_lab(images_u8: Tensor) -> tuple[Tensor, Tensor]:
    """uint8 RGB (B, 3, H, W) (or gray, C = 1) -> (L_n, ab_n) in [-1, 1]."""
    rgb = images_u8.float() / 255.0
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    return rgb_to_lab_normalised(rgb)


def gray_rgb(lightness: Tensor) -> Tensor:
    """The grayscale image of L_n as RGB in [0, 1] (zero ab): what a colorization model is given."""
    return lab_normalised_to_rgb(lightness, torch.zeros_like(lightness).expand(-1, 2, -1, -1))
