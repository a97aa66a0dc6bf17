"""SVHN cropped digits (the 32x32 .mat files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from agelab.data import DatasetError, ImageData
from agelab.data.cache import cached
from agelab.data.download import ensure_files
from agelab.data.lookup import bases, check_roots, check_split, searched
from agelab.errors import one_line

# SVHN: http://ufldl.stanford.edu/housenumbers/ ("Format 2: cropped digits").
SVHN_FILES = {
    "train": ("train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
              "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
             "eb5a983be6a315427106f1b164d9cef3"),
}
SVHN_DIRS = ("svhn", "SVHN", "")


def load_svhn(split: str, roots: list[Path], allow_download: bool = False, *, progress: bool = True) -> ImageData:
    """SVHN cropped digits, 73,257 train / 26,032 test 32x32 RGB images. Returns (N, 3, 32, 32).

    Files: ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5, read with
    scipy.io.loadmat) from http://ufldl.stanford.edu/housenumbers/ (md5
    e26dedcc434d2e4c54c9b2d4a06d8373 and eb5a983be6a315427106f1b164d9cef3), in a
    root or its ``svhn/`` subfolder. ``X`` is (32, 32, 3, N); label 10 means the
    digit 0, so labels are 0..9. The ``extra`` set is not used.
    """
    check_split(split)
    roots = check_roots(roots, "SVHN")
    filename, url, md5 = SVHN_FILES[split]
    path = next((b / filename for b in bases(roots, SVHN_DIRS) if (b / filename).is_file()), None)
    if path is None:
        path = ensure_files("SVHN", roots[0] / "svhn", {filename: (url, None, md5)}, allow_download,
                            progress=progress, hint=searched(roots, SVHN_DIRS))[filename]
    return cached([path], lambda: _svhn_from(split, path))


def _svhn_from(split: str, path: Path) -> ImageData:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
        x, y = mat["X"], mat["y"]
    except Exception as exc:  # OSError, ValueError, MatReadError, NotImplementedError (v7.3), KeyError
        raise DatasetError(f"cannot read SVHN from {path}: {type(exc).__name__}: {one_line(exc)}") from None
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8 or y.size != x.shape[3]:
        raise DatasetError(f"{path}: expected X uint8 (32, 32, 3, N) and N labels, got X {x.dtype} {x.shape}, "
                           f"y {y.shape}")
    labels = np.asarray(y, dtype=np.int64).reshape(-1)
    labels[labels == 10] = 0
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels outside 1..10")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))  # (N, 3, 32, 32)
    return ImageData("svhn", split, images, torch.from_numpy(labels))
