"""Linear probes: how linearly separable the classes are in the encoder's features.

Protocol: features of the training split train a multinomial logistic regression
(scikit-learn, L2, C = 1, lbfgs) on standardised features (a ``StandardScaler`` fitted
on the probe's own training features); the number reported is the error on the
whole test split. Two label budgets:

* all labels: every training image (subsampled only when N x D would exceed
  :data:`MAX_ELEMENTS`; the number used is recorded);
* 1,000 labels: 100 per class (``1000 // K`` for K classes), drawn with a fixed seed.

Feature sources (``--probe-features``):

* ``code``: the code e(x) (M numbers, on the unit sphere);
* ``hidden``: the paper's SVHN unsupervised-feature protocol (as in ALI / DCGAN):
  the encoder's last hidden layers (the activations of its last three stride-2
  stages, before the code head), each max-pooled to at most 4x4, flattened and
  concatenated, with a linear classifier on 1,000 labels.

The reference ("floor") is the same probe on raw pixels with the same 1,000 labels.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

MAX_ELEMENTS = 50_000_000  # cap on N x D of a probe's training matrix (about 400 MB as float64)
PROBE_SOURCES = ("code", "hidden")


def balanced_subset(labels: Tensor, per_class: int, seed: int = 0) -> Tensor:
    """Indices of ``per_class`` random images of every class (fewer where a class is smaller), sorted."""
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        picked.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.cat(picked).sort().values


def linear_probe(train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, *, C: float = 1.0,
                 max_iter: int = 1000, seed: int = 0) -> dict:
    """Fit logistic regression on standardised ``train_f`` (N, D); error and accuracy on ``test_f`` (T, D)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(torch.unique(train_y)) < 2:
        raise ValueError("a linear probe needs at least two classes among its training labels")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(train_f.double().numpy(), train_y.numpy())
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    pred = np.concatenate([clf.predict(test_f[i : i + 2000].double().numpy()) for i in range(0, len(test_f), 2000)])
    acc = float((pred == test_y.numpy()).mean())
    return {"error": 1.0 - acc, "accuracy": acc, "n_train": len(train_f), "n_test": len(test_f),
            "dim": int(train_f.shape[1]), "converged": converged}


def _hidden(encoder: nn.Module, x: Tensor, layers: int = 3, grid: int = 4) -> Tensor:
    """The activations after the last ``layers`` nonlinearities of ``encoder.features``, each max-pooled to at
    most grid x grid and flattened: (B, sum_l C_l * min(H_l, grid)^2)."""
    acts = []
    h = x
    for m in encoder.features:
        h = m(h)
        if isinstance(m, (nn.LeakyReLU, nn.ReLU)):
            acts.append(h)
    out = []
    for a in acts[-layers:]:  # (B, C_l, H_l, W_l)
        if a.shape[-1] > grid:
            a = F.adaptive_max_pool2d(a, grid)
        out.append(a.flatten(1))
    return torch.cat(out, 1)


@torch.no_grad()
def encoder_features(model, images: Tensor, source: str = "code", batch: int = 256, progress: bool = False) -> Tensor:
    """Encoder features (N, D) of uint8 images (N, C, S, S): the code e(x) or the last hidden layers."""
    if source not in PROBE_SOURCES:
        raise ValueError(f"probe feature source must be one of {PROBE_SOURCES}, got {source!r}")
    model.eval()
    out = []
    for i in tqdm(range(0, len(images), batch), desc=f"encoder {source}", disable=not progress, leave=False):
        x = images[i : i + batch].to(model.device).float().div(127.5).sub(1.0)  # (B, C, S, S) in [-1, 1]
        out.append((model.encode(x) if source == "code" else _hidden(model.encoder, x)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def probe_suite(model, train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor, *,
                source: str = "code", n_labels: int = 1000, seed: int = 0, progress: bool = False) -> dict:
    """The probes of one feature source: ``{"all_labels": {...}, "1000_labels": {..., "floor": pixels}}``."""
    classes = int(train_labels.max()) + 1
    per_class = max(1, n_labels // classes)
    few = balanced_subset(train_labels, per_class, seed)
    test_f = encoder_features(model, test_images, source, progress=progress)
    dim = test_f.shape[1]
    n_all = min(len(train_images), max(n_labels, MAX_ELEMENTS // max(dim, 1)))
    gen = torch.Generator().manual_seed(seed)
    all_idx = (torch.arange(len(train_images)) if n_all == len(train_images)
               else torch.randperm(len(train_images), generator=gen)[:n_all].sort().values)
    need = torch.unique(torch.cat([all_idx, few]))  # features only of the images some probe uses
    feats = torch.zeros(len(train_images), dim)
    feats[need] = encoder_features(model, train_images[need], source, progress=progress)
    what = "code e(x)" if source == "code" else "encoder's last 3 hidden layers, max-pooled to <= 4x4"
    common = {"features": what, "classifier": "logistic regression (L2, C=1) on standardised features",
              "train_split": "train", "test_split": "test", "seed": seed}
    out = {"all_labels": dict(linear_probe(feats[all_idx], train_labels[all_idx], test_f, test_labels, seed=seed),
                              **common, subsampled=n_all < len(train_images))}
    few_res = dict(linear_probe(feats[few], train_labels[few], test_f, test_labels, seed=seed), **common,
                   per_class=per_class)
    pix = lambda im: im.flatten(1).float()  # noqa: E731  (N, C*S*S)
    floor = linear_probe(pix(train_images[few]), train_labels[few], pix(test_images), test_labels, seed=seed)
    few_res["floor"] = dict(floor, features="raw pixels")
    out[f"{n_labels}_labels"] = few_res
    return out
