"""Reconstruction metrics of an AGE model on held-out images.

* ``l1``, ``mse``: mean over images of the per-pixel mean |x - g(e(x))| and squared error,
  in [-1, 1] units (the generator's range);
* ``psnr``: mean over images of the per-image PSNR in dB with data range 2 (identical to
  the PSNR on the [0, 1] scale with range 1); torchmetrics' functional PSNR;
* ``ssim``: mean SSIM (Gaussian window 11, sigma 1.5) on the [0, 1] scale; torchmetrics;
* ``latent_cycle``: mean ||z - e(g(z))||^2 for z drawn from the prior (for unit codes
  half of it is 1 - cos(z, e(g(z)))), the quantity the AGE generator loss (eq. 5) keeps small;
* ``domain_accuracy``: the fraction of images for which a classifier gives x and g(e(x))
  the same label, with the classifier's own accuracy on x next to it.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import tqdm


def _batches(n: int, batch: int, progress: bool, desc: str):
    return tqdm(range(0, n, batch), desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def reconstruct_all(model, x: Tensor, batch: int = 256, progress: bool = False) -> Tensor:
    """g(e(x)) for float images (N, C, S, S) in [-1, 1], on CPU."""
    dev = model.device
    return torch.cat([model.reconstruct(x[i : i + batch].to(dev)).cpu()
                      for i in _batches(len(x), batch, progress, "reconstruct")])


@torch.no_grad()
def image_errors(x: Tensor, rec: Tensor, batch: int = 256, ssim: bool = True) -> dict[str, float]:
    """L1, MSE ([-1, 1] units), PSNR (dB) and (``ssim``) SSIM between images and reconstructions (N, C, S, S) in
    [-1, 1]. The one definition of these numbers: summary.json, eval.json, ``agelab reconstruct`` and the demo."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    if x.shape != rec.shape or len(x) == 0:
        raise ValueError(f"expected two equal, non-empty image batches, got {tuple(x.shape)} and {tuple(rec.shape)}")
    sums = {"l1": 0.0, "mse": 0.0, "psnr": 0.0} | ({"ssim": 0.0} if ssim else {})
    for i in range(0, len(x), batch):
        xb, rb = x[i : i + batch].float(), rec[i : i + batch].float()  # float32: SSIM's convolutions are slow in float64
        diff = rb - xb
        sums["l1"] += diff.abs().mean(dim=(1, 2, 3)).sum().item()
        sums["mse"] += diff.pow(2).mean(dim=(1, 2, 3)).sum().item()
        psnr = peak_signal_noise_ratio(rb, xb, data_range=2.0, reduction="none", dim=(1, 2, 3))  # (B,)
        sums["psnr"] += psnr.clamp(max=100.0).sum().item()  # a perfect copy counts as 100 dB, not inf
        if ssim:
            sims = structural_similarity_index_measure((rb + 1) / 2, (xb + 1) / 2, data_range=1.0, reduction="none")
            sums["ssim"] += sims.sum().item()  # (B,)
    return {k: v / len(x) for k, v in sums.items()}


@torch.no_grad()
def latent_cycle_error(model, n: int, seed: int = 0, batch: int = 256) -> float:
    """mean ||z - e(g(z))||^2 over n prior samples drawn with their own RNG."""
    gen = torch.Generator().manual_seed(seed)
    z = model.prior.sample(n, generator=gen)  # (n, M)
    total = 0.0
    for i in range(0, n, batch):
        zb = z[i : i + batch].to(model.device)
        total += (zb - model.encode(model.decode(zb))).pow(2).sum(1).sum().item()
    return total / n


@torch.no_grad()
def domain_accuracy(extractor, x: Tensor, rec: Tensor, labels: Tensor | None = None,
                    batch: int = 256) -> dict[str, float]:
    """``agreement``: P(class(g(e(x))) == class(x)); ``real_accuracy`` / ``recon_accuracy`` against labels."""
    pred_x, pred_r = [], []
    for i in range(0, len(x), batch):
        pred_x.append(extractor.logits(x[i : i + batch].to(extractor.device)).argmax(1).cpu())
        pred_r.append(extractor.logits(rec[i : i + batch].to(extractor.device)).argmax(1).cpu())
    px, pr = torch.cat(pred_x), torch.cat(pred_r)
    out = {"agreement": (px == pr).double().mean().item()}
    if labels is not None:
        out["real_accuracy"] = (px == labels).double().mean().item()
        out["recon_accuracy"] = (pr == labels).double().mean().item()
    return out
