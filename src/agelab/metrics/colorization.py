"""Colorization metrics for diverse colorization (paper 3.2, figure 4): AGE vs pix2pix with noise.

For held-out images with K colorizations g(z_1 | L) ... g(z_K | L) each (z drawn
independently per image), all ab distances in CIE Lab units (ab of sRGB colours
span about [-108, 98]):

    diversity            mean over images and pairs i < j of the per-pixel Euclidean ab distance
                         ||ab_i - ab_j||_2, averaged over pixels (0 when z is ignored)
    z_sensitivity        mean over pairs of mean |ab_i - ab_j| (per channel), divided by the ground truth's ab
                         spread, the mean |ab_true - mean ab_true| over the evaluated images (dataset mean
                         per channel): how much z moves the output relative to how much colours vary at all
    colorfulness         Hasler & Suesstrunk (2003) on the RGB outputs (0..255 scale), mean over images and
                         samples; ``colorfulness_true`` is that of the ground truth; 0 for gray images
    l1_best / l1_mean_of_k / l1_sample
                         mean |ab - ab_true| of the best of K (per image), of the mean of the K ab
                         predictions, and of a single sample (mean over samples)
    psnr_best / psnr_mean_of_k / psnr_sample
                         PSNR (dB) of the RGB image (true L, predicted ab) against the true RGB image on the
                         [0, 1] scale; best = the highest of K per image

Fidelity and diversity pull in opposite directions: a model that outputs the
mean colour has the best mean-of-K error and zero diversity; best-of-K rewards
a diverse model whose samples cover the true colour.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from agelab.colorspace import AB_SCALE, lab_normalised_to_rgb, uint8_to_lab


def colorfulness(rgb01: Tensor) -> Tensor:
    """Hasler-Suesstrunk colourfulness of RGB images in [0, 1] (N, 3, H, W) -> (N,), on the 0..255 scale.

    rg = R - G, yb = (R + G)/2 - B; M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2).
    """
    rgb = rgb01.float() * 255.0
    r, g, b = rgb[:, 0].flatten(1), rgb[:, 1].flatten(1), rgb[:, 2].flatten(1)
    rg, yb = r - g, 0.5 * (r + g) - b
    std = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    mean = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return std + 0.3 * mean


def pairwise_ab_distance(ab: Tensor) -> tuple[Tensor, Tensor]:
    """K samples ab (N, K, 2, H, W) in Lab units -> per image (N,): mean over pairs i < j of the mean
    per-pixel Euclidean distance, and of the mean absolute difference per channel. K < 2 gives zeros."""
    n, k = ab.shape[:2]
    if k < 2:
        return ab.new_zeros(n), ab.new_zeros(n)
    eucl, absd = [], []
    for i, j in itertools.combinations(range(k), 2):
        d = ab[:, i] - ab[:, j]  # (N, 2, H, W)
        eucl.append(d.pow(2).sum(1).sqrt().flatten(1).mean(1))
        absd.append(d.abs().flatten(1).mean(1))
    return torch.stack(eucl, 1).mean(1), torch.stack(absd, 1).mean(1)


def psnr01(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB of images in [0, 1], per image: (N, ...) -> (N,)."""
    mse = (pred - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def evaluate_colorization(model, images_u8: Tensor, k: int = 8, seed: int = 0, batch: int = 64) -> dict:
    """Diversity, z-sensitivity, colourfulness and fidelity (best of K, mean of K, single sample) of a
    colorization model (conditional AGE or pix2pix) on uint8 RGB images (N, 3, S, S); see the module doc.

    ``model`` needs ``decode(z, L)``, ``prior`` and ``device``; z are drawn from their own RNG (``seed``).
    """
    if k < 1 or len(images_u8) == 0:
        raise ValueError("need at least one image and k >= 1")
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    ab_true_all = []
    per_image: dict[str, list[Tensor]] = {name: [] for name in (
        "diversity", "abs_pair", "colorfulness", "colorfulness_true", "l1_best", "l1_mean_of_k", "l1_sample",
        "psnr_best", "psnr_mean_of_k", "psnr_sample")}
    try:
        for start in range(0, len(images_u8), batch):
            x = images_u8[start:start + batch].to(model.device)
            n = len(x)
            lightness, ab_true_n = uint8_to_lab(x)  # (n, 1, S, S), (n, 2, S, S)
            rgb_true = x.float() / 255.0
            z = model.prior.sample(n * k, generator=gen).to(model.device)  # (n k, M), independent per image
            l_rep = lightness.repeat_interleave(k, dim=0)  # (n k, 1, S, S)
            ab_n = model.decode(z, l_rep).float()  # (n k, 2, S, S) in [-1, 1]
            rgb = lab_normalised_to_rgb(l_rep, ab_n)  # (n k, 3, S, S)
            ab = ab_n.view(n, k, *ab_n.shape[1:]) * AB_SCALE  # Lab units
            ab_true = ab_true_n * AB_SCALE  # (n, 2, S, S)
            ab_true_all.append(ab_true.cpu())

            eucl, absd = pairwise_ab_distance(ab)
            per_image["diversity"].append(eucl)
            per_image["abs_pair"].append(absd)
            per_image["colorfulness"].append(colorfulness(rgb).view(n, k).mean(1))
            per_image["colorfulness_true"].append(colorfulness(rgb_true))
            l1 = (ab - ab_true.unsqueeze(1)).abs().flatten(2).mean(2)  # (n, k)
            per_image["l1_best"].append(l1.min(1).values)
            per_image["l1_sample"].append(l1.mean(1))
            ab_mean = ab.mean(1)  # (n, 2, S, S)
            per_image["l1_mean_of_k"].append((ab_mean - ab_true).abs().flatten(1).mean(1))
            psnr = psnr01(rgb, rgb_true.repeat_interleave(k, dim=0)).view(n, k)
            per_image["psnr_best"].append(psnr.max(1).values)
            per_image["psnr_sample"].append(psnr.mean(1))
            rgb_mean = lab_normalised_to_rgb(lightness, ab_mean / AB_SCALE)
            per_image["psnr_mean_of_k"].append(psnr01(rgb_mean, rgb_true))
    finally:
        model.train(was)
    for name, parts in per_image.items():
        sums[name] = torch.cat([p.cpu() for p in parts]).mean().item()
    ab_true_all = torch.cat(ab_true_all)  # (N, 2, S, S)
    spread = (ab_true_all - ab_true_all.mean(dim=(0, 2, 3), keepdim=True)).abs().mean().item()
    abs_pair = sums.pop("abs_pair")
    return {
        "images": len(images_u8), "k": k, "seed": seed,
        "diversity": sums["diversity"],
        "z_sensitivity": abs_pair / spread if spread > 0 else 0.0,
        "mean_abs_ab_difference": abs_pair,
        "ab_spread_true": spread,
        "colorfulness": sums["colorfulness"],
        "colorfulness_true": sums["colorfulness_true"],
        "l1_best": sums["l1_best"], "l1_mean_of_k": sums["l1_mean_of_k"], "l1_sample": sums["l1_sample"],
        "psnr_best": sums["psnr_best"], "psnr_mean_of_k": sums["psnr_mean_of_k"], "psnr_sample": sums["psnr_sample"],
    }


__all__ = ["colorfulness", "evaluate_colorization", "pairwise_ab_distance", "psnr01"]
