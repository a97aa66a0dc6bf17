"""Image grids, sampling, reconstruction pairs and latent interpolation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from agelab.data import to_uint8
from agelab.latent import slerp


def make_grid(images: Tensor, nrow: int = 8, pad: int = 2, pad_value: int = 255) -> Tensor:
    """uint8 images (N, C, H, W) -> one uint8 image (C, H', W'), ``nrow`` images per row."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = math.ceil(n / ncol)
    grid = torch.full((c, rows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


def save_image(image: Tensor, path: str | Path) -> Path:
    """Save a uint8 image (C, H, W) with C in {1, 3} as PNG."""
    arr = image.permute(1, 2, 0).cpu().numpy()
    arr = arr[..., 0] if arr.shape[2] == 1 else arr
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)
    return path


def save_grid(images: Tensor, path: str | Path, nrow: int = 8) -> Path:
    """Save float images in [-1, 1] (N, C, H, W) as a PNG grid."""
    return save_image(make_grid(to_uint8(images.cpu()), nrow=nrow), path)


@torch.no_grad()
def sample_images(model, n: int, seed: int = 0, batch: int = 256, uint8: bool = False,
                  progress: bool = False) -> Tensor:
    """n samples g(z), z ~ prior, drawn from their own RNG (the global one is untouched): float in [-1, 1] on the
    model's device, or with ``uint8`` as uint8 on the CPU, converted batch by batch (what the metrics read)."""
    from tqdm import tqdm

    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = model.prior.sample(n, generator=gen).to(model.device)  # (n, M)
    batches = (model.decode(z[i : i + batch]) for i in tqdm(range(0, n, batch), desc="samples",
                                                            disable=not progress, leave=False))
    return torch.cat([to_uint8(x).cpu() for x in batches] if uint8 else list(batches))


@torch.no_grad()
def reconstruction_pairs(model, x: Tensor) -> Tensor:
    """(2N, C, H, W): real, reconstruction, real, reconstruction, ..."""
    rec = model.reconstruct(x)
    return torch.stack([x, rec], dim=1).flatten(0, 1)


@torch.no_grad()
def interpolation_rows(model, xa: Tensor, xb: Tensor, steps: int = 8) -> Tensor:
    """Spherical interpolation between e(xa) and e(xb): (N * steps, C, H, W), one row per pair."""
    return latent_interpolation_rows(model, model.encode(xa), model.encode(xb), steps)


@torch.no_grad()
def latent_interpolation_rows(model, za: Tensor, zb: Tensor, steps: int = 8) -> Tensor:
    """g along the spherical interpolation between codes za and zb (N, M): (N * steps, C, H, W)."""
    t = torch.linspace(0, 1, steps)
    z = slerp(za, zb, t).flatten(0, 1)  # (N * steps, M)
    return model.decode(z)


def reconstruction_errors(model, x: Tensor, batch: int = 256) -> dict[str, float]:
    """Mean L1 and MSE of g(e(x)) in [-1, 1] units, and PSNR in dB on the [0, 1] scale (capped at 100 dB), as
    :func:`agelab.metrics.reconstruction.image_errors` computes them for eval.json."""
    from agelab.metrics.reconstruction import image_errors, reconstruct_all

    return image_errors(x.cpu(), reconstruct_all(model, x, batch), batch, ssim=False)
