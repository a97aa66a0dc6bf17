"""``agelab eval`` (:func:`agelab.evaluate.evaluate_run`) on a training run of every dataset agelab supports.

Each dataset is faked in tmp_path in its real on-disk format (IDX files, CIFAR pickled
batches, SVHN .mat, CelebA aligned JPEGs + partition list, the Tiny ImageNet tree, the
Stanford Cars train-only layout, image folders) with the fixture helpers of
conftest.py, test_sources.py and test_folder_dataset.py; a 2-iteration AGE run
(width 4, latent 4) is trained on it, then evaluated with a randomly initialised
SmallCNN as the feature extractor. No domain classifier exists (the per-user cache
is isolated by conftest), so the reconstruction-agreement metric is always skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agelab.config import DATASETS
from agelab.data import load_dataset
from agelab.data.sources import IDX_FILES
from conftest import fake_mnist_arrays, tiny_config, write_idx_gz
from test_folder_dataset import make_folder
from test_sources import WNIDS, celeba_image, save_image, write_cars_train_only, write_cifar_batches

N_SAMPLES = 16
SAMPLE_QUALITY = ("fid", "kid", "precision", "recall")
RECONSTRUCTION = ("recon_l1", "recon_mse", "recon_psnr", "recon_ssim", "latent_cycle")


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """scikit-learn's probes with several BLAS threads crawl on a 2-core machine shared with trainings."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


# ---------------------------------------------------------------------------
# fake datasets: builder(tmp_path) -> data_root (None: nothing on disk)
# ---------------------------------------------------------------------------
def _digits(tmp: Path) -> None:
    return None  # bundled with scikit-learn


def _idx(tmp: Path, sub: str) -> str:
    """MNIST-type IDX files (48 train / 24 test, 28x28), in ``tmp/root/<sub>``."""
    root = tmp / "root"
    for split, (n, seed) in {"train": (48, 1), "test": (24, 2)}.items():
        for name, arr in zip(IDX_FILES[split], fake_mnist_arrays(n, seed)):
            write_idx_gz(root / sub / name, arr)
    return str(root)


def _mnist(tmp: Path) -> str:
    return _idx(tmp, "mnist")


def _fashion(tmp: Path) -> str:
    return _idx(tmp, "fashion-mnist")


def _cifar10(tmp: Path) -> str:
    """cifar10/cifar-10-batches-py/: 5 pickled train batches of 10 images, a test batch of 24 (as cifar_batches)."""
    write_cifar_batches(tmp / "root", 10, 24)
    return str(tmp / "root")


def _svhn(tmp: Path) -> str:
    """svhn/{train,test}_32x32.mat: X uint8 (32, 32, 3, N), y in 1..10 (10 is the digit 0)."""
    import scipy.io

    rng = np.random.default_rng(0)
    (tmp / "root" / "svhn").mkdir(parents=True)
    for split, n in (("train", 48), ("test", 24)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(tmp / "root" / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y})
    return str(tmp / "root")


def _celeba(tmp: Path) -> str:
    """celeba/img_align_celeba/*.jpg (178x218 faces, noise added so images differ) + list_eval_partition.txt:
    40 train (0), 4 validation (1, unused), 24 test (2)."""
    base = tmp / "root" / "celeba"
    rng = np.random.default_rng(0)
    partition = [0] * 40 + [1] * 4 + [2] * 24
    lines = []
    for i, part in enumerate(partition, 1):
        img = np.clip(celeba_image().astype(int) + rng.integers(-60, 60, (218, 178, 3)), 0, 255).astype(np.uint8)
        save_image(base / "img_align_celeba" / f"{i:06d}.jpg", img, quality=90)
        lines.append(f"{i:06d}.jpg {part}")
    (base / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return str(base.parent)


def _tinyimagenet(tmp: Path) -> str:
    """tiny-imagenet-200/ (layout of test_sources.tin_tree): 3 classes x 16 train images, 24 val images."""
    top = tmp / "root" / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    (top / "val" / "images").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(WNIDS))
    (top / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in WNIDS))
    for wnid in WNIDS:
        for i in range(16):
            save_image(top / "train" / wnid / "images" / f"{wnid}_{i}.JPEG",
                       rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG", quality=90)
        (top / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    ann = []
    for i in range(24):
        save_image(top / "val" / "images" / f"val_{i}.JPEG", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                   "JPEG", quality=90)
        ann.append(f"val_{i}.JPEG\t{WNIDS[i % 3]}\t0\t0\t63\t63")
    (top / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return str(tmp / "root")


def _cars(tmp: Path) -> str:
    """stanford-cars/ train-only layout (cars_train/*.jpg + train_perfect_preds.txt): 60 images, every 10th is
    test, so 54 train / 6 test. The builder gives every image its own class; the labels are rewritten to 4
    classes (ids 1..4), as 54 one-image classes make the probes' logistic regressions take ~25 s."""
    base = tmp / "root" / "stanford-cars"
    write_cars_train_only(base, n=60)
    (base / "train_perfect_preds.txt").write_text("".join(f"{i % 4 + 1}\n" for i in range(60)))
    return str(tmp / "root")


def _folder(tmp: Path) -> str:
    """Two class subfolders of 30 random PNGs each: every 10th image is test, so 54 train / 6 test."""
    return str(make_folder(tmp / "imgs", n_per_class=30))


def _folder_flat(tmp: Path) -> str:
    """60 random PNGs directly in the folder: no class subfolders, so no labels."""
    return str(make_folder(tmp / "imgs", n_per_class=60, classes=("",)))


# dataset id -> (dataset, builder, image size, channels, has class labels)
CASES = {
    "digits": ("digits", _digits, 32, 1, True),
    "mnist": ("mnist", _mnist, 32, 1, True),
    "fashion-mnist": ("fashion-mnist", _fashion, 32, 1, True),
    "cifar10": ("cifar10", _cifar10, 32, 3, True),
    "svhn": ("svhn", _svhn, 32, 3, True),
    "celeba": ("celeba", _celeba, 64, 3, False),
    "tinyimagenet": ("tinyimagenet", _tinyimagenet, 64, 3, True),
    "cars": ("cars", _cars, 64, 3, True),
    "folder": ("folder", _folder, 32, 3, True),
    "folder-unlabelled": ("folder", _folder_flat, 32, 3, False),
}


def test_every_dataset_is_covered():
    assert {c[0] for c in CASES.values()} == set(DATASETS)


def _finite(entry: dict) -> bool:
    return isinstance(entry["value"], (int, float)) and math.isfinite(entry["value"])


@pytest.mark.parametrize("case", list(CASES))
def test_eval_of_a_run_on_each_dataset(case, tmp_path):
    from agelab.evaluate import evaluate_run
    from agelab.metrics.features import ClassifierExtractor
    from agelab.nets.classifier import SmallCNN
    from agelab.trainer import train

    dataset, build, size, channels, labelled = CASES[case]
    root = build(tmp_path)
    run = train(tiny_config(tmp_path / "runs", dataset=dataset, data_root=root, image_size=size, iterations=2,
                            no_download=True), progress=False)
    train_split = load_dataset(dataset, "train", size, root, progress=False)
    test_split = load_dataset(dataset, "test", size, root, progress=False)
    assert train_split.channels == channels and (len(torch.unique(train_split.labels)) >= 2) == labelled

    torch.manual_seed(0)
    classes = int(train_split.labels.max()) + 1 if labelled else 10
    extractor = ClassifierExtractor(SmallCNN(channels=channels, classes=classes, width=4, image_size=size),
                                    name="random-cnn")
    result = evaluate_run(run, features=extractor, n_samples=N_SAMPLES, progress=False, write=True)

    # ---- the files and the bookkeeping ----------------------------------------------------------------
    assert (run / "eval.json").is_file() and (run / "eval.html").is_file()
    saved = json.loads((run / "eval.json").read_text())
    assert saved["dataset"] == result["dataset"] == dataset and saved["metrics"].keys() == result["metrics"].keys()
    assert result["model"] == "age" and result["image_size"] == size and result["step"] == 2
    assert result["extractor"]["kind"] == "custom" and result["extractor"]["name"] == "random-cnn"
    assert result["domain_classifier"] is None
    n = min(N_SAMPLES, len(train_split))
    assert (result["n_train"], result["n_test"], result["n_samples"]) == (len(train_split), len(test_split), n)
    html = (run / "eval.html").read_text()
    assert dataset in html and "data:image/png;base64," in html
    metrics, skipped = result["metrics"], result["skipped"]
    assert all(isinstance(why, str) and why for why in skipped.values())

    # ---- sample quality: computed when both sets have more than k = 3 images, else skipped with the reason --
    if min(len(test_split), n) > 3:
        assert "sample_quality" not in skipped
        for name in (*SAMPLE_QUALITY, "inception_score"):
            assert _finite(metrics[name]) and _finite(metrics[name]["floor"]), (name, metrics[name])
        for name in SAMPLE_QUALITY:
            assert (metrics[name]["n_real"], metrics[name]["n_fake"]) == (len(test_split), n)
        assert 0.0 <= metrics["precision"]["value"] <= 1.0 and 0.0 <= metrics["recall"]["value"] <= 1.0
    else:
        assert "needs at least" in skipped["sample_quality"] or "needs more than" in skipped["sample_quality"]
        assert not set(SAMPLE_QUALITY) & set(metrics)

    # ---- reconstruction on the test split ---------------------------------------------------------------
    for name in RECONSTRUCTION:
        assert _finite(metrics[name]), (name, metrics[name])
    assert metrics["recon_l1"]["n"] == len(test_split) and metrics["recon_l1"]["value"] >= 0.0
    assert metrics["recon_psnr"]["value"] > 0.0

    # ---- linear probes (labelled datasets) or the reason they are skipped ---------------------------------
    probes = {k for k in metrics if k.startswith("probe_")}
    if labelled:
        assert probes == {"probe_code_all_labels", "probe_code_1000_labels"}, probes
        assert "linear_probe" not in skipped
        everything, few = metrics["probe_code_all_labels"], metrics["probe_code_1000_labels"]
        assert everything["n"] == len(train_split) and everything["subsampled"] is False
        # 1,000 labels = 1000 // K per class: with these few images every class is smaller, so all are used
        per_class = max(1, 1000 // classes)
        counts = torch.bincount(train_split.labels)
        assert few["per_class"] == per_class and few["n"] == int(counts.clamp(max=per_class).sum())
        for entry in (everything, few, few["floor"]):
            assert _finite(entry) and 0.0 <= entry["value"] <= 1.0 and entry["n_test"] == len(test_split)
        assert few["floor"]["features"] == "raw pixels"
        assert skipped["recon_domain_accuracy"].startswith(f"no classifier for {dataset}")
    else:
        assert not probes and skipped["linear_probe"] == f"{dataset} has no class labels"
        assert skipped["recon_domain_accuracy"] == "dataset has no class labels"
