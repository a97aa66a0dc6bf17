"""Sample quality: FID, KID, Inception Score and precision/recall, each with a real-data floor.

All metrics work on features from one :class:`~agelab.metrics.features.FeatureExtractor`,
extracted once per image set and then shared by every metric:

* FID (Heusel et al. 2017) and KID (Binkowski et al. 2018): torchmetrics'
  ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` with a feature module
  that hands over the precomputed features (:class:`Precomputed`); no
  torch-fidelity or torchvision is involved.
* Inception Score (Salimans et al. 2016): torchmetrics' ``InceptionScore`` over
  precomputed logits, ``exp(E_x KL(p(y|x) || p(y)))`` averaged over splits.
* Precision/recall of Kynkaanniemi et al. 2019, by hand: a sample is "precise" when it
  lies inside the k-NN ball (k = 3) of at least one real feature; a real image is
  "recalled" when it lies inside the k-NN ball of at least one sample.

The floor: the same metric between two REAL sets (the training split against the
test split, with as many training images as there are samples). A model cannot be
expected to beat it with the same numbers of images and the same extractor.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from agelab.metrics import MetricsError


class Precomputed(nn.Module):
    """Identity feature module: lets torchmetrics' metrics consume features computed beforehand."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x  # (N, D) -> (N, D)


def _check(real: Tensor, fake: Tensor, need: int, what: str) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise MetricsError(f"{what}: expected two (N, D) feature sets of equal D, got {tuple(real.shape)} and "
                           f"{tuple(fake.shape)}")
    if min(len(real), len(fake)) < need:
        raise MetricsError(f"{what} needs at least {need} images per set, got {len(real)} real and {len(fake)} fake")


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FID between feature sets (N, D) and (M, D): ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check(real, fake, 2, "FID")
    metric = FrechetInceptionDistance(feature=Precomputed(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_inception_distance(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (unbiased MMD^2, cubic polynomial kernel) over random subsets: (mean, std over subsets).

    ``subset_size`` is capped at the smaller set's size; the subsets are drawn with ``seed``.
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    _check(real, fake, 2, "KID")
    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=Precomputed(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(logits: Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS of class logits (N, K): exp(mean_x KL(softmax(x) || mean softmax)), (mean, std) over ``splits``.

    ``splits`` is capped at N. 1 for identical predictions, K for confident, evenly spread ones.
    """
    from torchmetrics.image.inception import InceptionScore

    if logits.ndim != 2 or len(logits) < 1:
        raise MetricsError(f"Inception Score: expected logits (N, K) with N >= 1, got {tuple(logits.shape)}")
    splits = max(1, min(splits, len(logits)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        warnings.filterwarnings("ignore", message=".*degrees of freedom is <= 0.*")  # std of a single split
        metric = InceptionScore(feature=Precomputed(logits.shape[1]), splits=splits)
        metric.update(logits.double())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mean, std = metric.compute()
    std = float(std)
    return float(mean), (0.0 if math.isnan(std) else std)  # one split: no spread


def knn_radii(feats: Tensor, k: int = 3, chunk: int = 1024) -> Tensor:
    """Distance of each point (N, D) to its k-th nearest neighbour other than itself: (N,)."""
    if len(feats) <= k:
        raise MetricsError(f"precision/recall with k={k} needs more than {k} images per set, got {len(feats)}")
    out = []
    for i in range(0, len(feats), chunk):
        d = torch.cdist(feats[i : i + chunk], feats)  # (chunk, N)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # index 0 is the point itself (distance 0)
    return torch.cat(out)


def _covered(points: Tensor, centres: Tensor, radii: Tensor, chunk: int = 1024) -> Tensor:
    """(P,) bool: point inside (distance <= radius) at least one ball around ``centres`` (C, D)."""
    out = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i : i + chunk], centres)  # (chunk, C)
        out.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of feature sets (N, D) and (M, D)."""
    _check(real, fake, k + 1, "precision/recall")
    real, fake = real.double(), fake.double()
    precision = _covered(fake, real, knn_radii(real, k)).double().mean().item()
    recall = _covered(real, fake, knn_radii(fake, k)).double().mean().item()
    return precision, recall


def sample_quality(real: Tensor, fake: Tensor, *, extractor: str, fake_logits: Tensor | None = None,
                   floor: Tensor | None = None, floor_logits: Tensor | None = None, k: int = 3,
                   kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10, seed: int = 0,
                   real_label: str = "real", fake_label: str = "fake", floor_label: str = "other real") -> dict:
    """FID, KID, IS (when logits are given) and precision/recall of ``fake`` against ``real`` features.

    ``floor``: features of another real set, compared to ``real`` the same way (the
    real-vs-real floor); the IS floor is the IS of ``floor_logits``. Returns
    ``{metric: {"value", "extractor", "n_real", "n_fake", "real", "fake", ["std"], ["floor": {...}]}}``.
    """

    def pack(value: float, n_real: int, n_fake: int, rl: str, fl: str, **extra) -> dict:
        return {"value": value, "extractor": extractor, "n_real": n_real, "n_fake": n_fake, "real": rl, "fake": fl,
                **extra}

    def compare(a: Tensor, b: Tensor, label: str) -> dict[str, dict]:
        kid, kid_std = kernel_inception_distance(a, b, kid_subsets, kid_subset_size, seed)
        prec, rec = precision_recall(a, b, k)
        n_a, n_b = len(a), len(b)
        size = min(kid_subset_size, n_a, n_b)
        return {
            "fid": pack(frechet_distance(a, b), n_a, n_b, real_label, label),
            "kid": pack(kid, n_a, n_b, real_label, label, std=kid_std, subsets=kid_subsets, subset_size=size),
            "precision": pack(prec, n_a, n_b, real_label, label, k=k),
            "recall": pack(rec, n_a, n_b, real_label, label, k=k),
        }

    out = compare(real, fake, fake_label)
    if floor is not None:
        for name, res in compare(real, floor, floor_label).items():
            out[name]["floor"] = res
    if fake_logits is not None:
        mean, std = inception_score(fake_logits, is_splits, seed)
        out["inception_score"] = pack(mean, 0, len(fake_logits), "-", fake_label, std=std,
                                      splits=min(is_splits, len(fake_logits)))
        if floor_logits is not None:
            fm, fs = inception_score(floor_logits, is_splits, seed)
            out["inception_score"]["floor"] = pack(fm, 0, len(floor_logits), "-", floor_label, std=fs,
                                                   splits=min(is_splits, len(floor_logits)))
    return out
