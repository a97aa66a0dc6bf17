"""MNIST and Fashion-MNIST: the IDX file format and the two loaders."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from agelab.data import DatasetError, ImageData
from agelab.data.cache import cached
from agelab.data.download import ensure_files
from agelab.data.lookup import bases, check_roots, check_split, searched
from agelab.errors import one_line

# Fashion-MNIST: https://github.com/zalandoresearch/fashion-mnist (README "Get the Data"; MIT).
# md5 of the .gz files as published there (and used by torchvision). The copies in
# shared/data/fashion-mnist differ from the official .gz bytes (their gzip headers carry no
# file name: train-images is 26,421,856 bytes, not 26,421,880), so the SHA256SUMS of that
# folder do not apply to official downloads, and these md5s do not match those copies.
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# MNIST: http://yann.lecun.com/exdb/mnist/ (the official host; it often refuses scripted
# downloads, hence the mirror used by PyTorch's own tooling). md5 of the official .gz files.
# The copies in shared/data/mnist are re-compressed: their uncompressed bytes match the
# official ones, their .gz bytes do not.
MNIST_MIRRORS = ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/")
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_DIRS = ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST")
MNIST_DIRS = ("mnist", "MNIST/raw", "")  # the first is where downloads go
IDX_DATASETS = {
    "mnist": dict(title="MNIST", dirs=MNIST_DIRS, mirrors=MNIST_MIRRORS, md5=MNIST_MD5),
    "fashion-mnist": dict(title="Fashion-MNIST", dirs=FASHION_MNIST_DIRS, mirrors=FASHION_MNIST_MIRRORS,
                          md5=FASHION_MNIST_MD5),
}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or raw) of unsigned bytes into an array of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (too short)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file ({body.size} of {int(np.prod(shape))} values)")
    return body.reshape(shape)


def _idx_from(name: str, split: str, found: Sequence[Path]) -> ImageData:
    """Images and labels of an MNIST-type dataset from its two IDX files (gzip or not)."""
    title = IDX_DATASETS[name]["title"]
    try:
        images, labels = read_idx(found[0]), read_idx(found[1])
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"cannot read {title} from {found[0].parent}: {one_line(exc)}") from None
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise DatasetError(f"{title} files in {found[0].parent} have unexpected shapes "
                           f"{images.shape}, {labels.shape}")
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{title} labels in {found[1]} go up to {labels.max()}, expected 0..9")
    return ImageData(name, split, torch.from_numpy(images.copy()).unsqueeze(1),
                     torch.from_numpy(labels.astype(np.int64)))


def _load_idx_dataset(name: str, split: str, roots: list[Path], allow_download: bool, progress: bool) -> ImageData:
    spec = IDX_DATASETS[name]
    check_split(split)
    roots = check_roots(roots, spec["title"])
    names = IDX_FILES[split]
    for base in bases(roots, spec["dirs"]):
        found = []
        for n in names:
            for candidate in (base / n, base / n[:-3]):
                if candidate.is_file():
                    found.append(candidate)
                    break
        if len(found) == len(names):
            break
    else:
        files = {n: ([m + n for m in spec["mirrors"]], None, spec["md5"][n]) for n in names}
        paths = ensure_files(spec["title"], roots[0] / spec["dirs"][0], files, allow_download,
                             progress=progress, hint=searched(roots, spec["dirs"]))
        found = [paths[n] for n in names]
    return cached(found, lambda: _idx_from(name, split, found))


def load_mnist(split: str, roots: list[Path], allow_download: bool = False, *, progress: bool = True) -> ImageData:
    """MNIST (LeCun et al.), 60,000 train / 10,000 test 28x28 grayscale digits. Returns (N, 1, 28, 28).

    Files (official IDX, gzip or not): ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz``, looked up in an ``mnist/`` or ``MNIST/raw/``
    subfolder of each root, or the root itself. Downloads come from
    http://yann.lecun.com/exdb/mnist/ or, when that host refuses, the mirror
    https://ossci-datasets.s3.amazonaws.com/mnist/, checked against the
    official md5 sums of the .gz files.
    """
    return _load_idx_dataset("mnist", split, roots, allow_download, progress)


def load_fashion_mnist(split: str, roots: list[Path], allow_download: bool = False, *,
                       progress: bool = True) -> ImageData:
    """Fashion-MNIST (Zalando), 60,000 train / 10,000 test 28x28 grayscale images, 10 classes.

    Files (official IDX, gzip or not): ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz`` from https://github.com/zalandoresearch/fashion-mnist
    (download links http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/<file>,
    checked against the md5 sums of its README). Looked up in a ``fashion-mnist/``,
    ``fashion_mnist/`` or ``FashionMNIST/raw/`` subfolder of each root, never in
    the root itself, where MNIST files with the same names may live. Returns
    (N, 1, 28, 28).
    """
    return _load_idx_dataset("fashion-mnist", split, roots, allow_download, progress)
