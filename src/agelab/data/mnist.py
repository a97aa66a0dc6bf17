"""MNIST from the official IDX gzip files (a minimal reader; no download yet)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
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


def find_mnist_folder(roots: list[Path], files: tuple[str, ...]) -> Path | None:
    for root in roots:
        for folder in (root, root / "mnist", root / "MNIST" / "raw"):
            if all((folder / f).is_file() for f in files):
                return folder
    return None


def load_mnist_split(split: str, roots: list[Path]):
    from agelab.data import DatasetError, ImageData

    files = FILES[split]
    folder = find_mnist_folder(roots, files)
    if folder is None:
        where = ", ".join(str(r) for r in roots)
        raise DatasetError(f"MNIST {split} files {' and '.join(files)} not found in any of: {where} "
                           "(or their mnist/ subfolder); pass --data-root or set AGELAB_DATA")
    try:
        images = read_idx(folder / files[0])
        labels = read_idx(folder / files[1])
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"cannot read MNIST from {folder}: {exc}") from None
    if images.ndim != 3 or labels.shape != (images.shape[0],):
        raise DatasetError(f"MNIST files in {folder} have unexpected shapes {images.shape}, {labels.shape}")
    return ImageData("mnist", split, torch.from_numpy(images.copy()).unsqueeze(1),
                     torch.from_numpy(labels.astype(np.int64)))
