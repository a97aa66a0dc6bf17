"""Datasets as in-memory uint8 tensors.

Every source returns an :class:`ImageData`: images (N, C, H, W) uint8 already at
the training size, and integer labels (N,). Training reads batches straight
from these tensors (no per-epoch decoding).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor


class DatasetError(RuntimeError):
    """A dataset cannot be found or read; the message says what is missing and where."""


@dataclass
class ImageData:
    name: str
    split: str
    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/agelab`` (``~/.cache/agelab`` without XDG_CACHE_HOME): agelab's per-user cache folder
    (a data root, the domain classifiers, the Inception weights, real-data features)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agelab"


def data_roots(data_root: str | os.PathLike | None) -> list[Path]:
    """Folders searched for dataset files, in order: --data-root, $AGELAB_DATA, the per-user cache."""
    roots = []
    if data_root:
        roots.append(Path(data_root).expanduser())
    if os.environ.get("AGELAB_DATA"):
        roots.append(Path(os.environ["AGELAB_DATA"]).expanduser())
    roots.append(user_cache_dir())
    return roots


def fit_to_size(images: Tensor, size: int) -> Tensor:
    """Bring uint8 images (N, C, h, w) to (N, C, size, size).

    Images up to 4 pixels smaller are zero-padded symmetrically (MNIST 28 -> 32,
    which keeps strokes sharp); others are resized bilinearly.
    """
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if h == w and 0 < size - h <= 4:
        lo = (size - h) // 2
        return F.pad(images, (lo, size - h - lo, lo, size - h - lo))
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=h > size)
    return out.round().clamp(0, 255).to(torch.uint8)


def load_dataset(name: str, split: str = "train", image_size: int = 32, data_root: str | None = None,
                 allow_download: bool = False, progress: bool = True, cache: bool = True,
                 strict: bool = False) -> ImageData:
    """Load a dataset split at the given size. ``split`` is 'train' or 'test'.

    ``allow_download`` lets sources with an official direct link fetch missing
    files into the first data root (checksummed); without it, missing files give
    a :class:`DatasetError` naming the files and where to put them.

    With ``cache`` (the default) the decoded, resized images are kept in a
    memory-mapped file under ``<data root>/agelab-cache/`` and later loads read
    that instead of decoding again (:mod:`agelab.data.cache`).

    ``name='folder'`` reads any folder of images, ``data_root`` itself (see
    :func:`_load_folder_split`); ``strict`` makes an unreadable image there an
    error instead of a counted warning.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if name == "digits":
        from agelab.data.digits import load_digits_split

        data = load_digits_split(split)
    elif name == "folder":
        data = _load_folder_split(data_root, split, image_size, cache, strict, progress)
    else:
        from agelab.data.cache import caching
        from agelab.data.sources import SOURCES

        if name not in SOURCES:
            raise DatasetError(f"unknown dataset {name!r}; choose one of digits, {', '.join(SOURCES)}")
        roots = data_roots(data_root)
        with caching(name, split, image_size, roots) if cache else nullcontext():
            data = SOURCES[name](split, roots, allow_download=allow_download, progress=progress)
    data.images = fit_to_size(data.images, image_size).contiguous()
    return data


FOLDER_TEST_EVERY = 10  # --dataset folder: every 10th image (in sorted order) is held out as 'test'


def _load_folder_split(folder: str | None, split: str, size: int, cache: bool, strict: bool,
                       progress: bool) -> ImageData:
    """Any folder of images (recursive; class subfolders give labels), at ``size`` x ``size``.

    There is no official split: in the loader's order (by class, then path), every
    10th image (index % 10 == 9) is 'test', the rest 'train'. The decoded folder is
    cached in the per-user roots ($AGELAB_DATA, ~/.cache/agelab), never inside the
    image folder itself; ``strict`` loads bypass the cache, so every file is checked.
    """
    from agelab.data.cache import cached, caching
    from agelab.data.sources import load_image_folder

    if not folder:
        raise DatasetError("--dataset folder needs --data-root PATH: the folder of images to train on")
    path = Path(folder).expanduser()

    def decode() -> ImageData:
        return load_image_folder(path, size, strict=strict, split="all", progress=progress)

    if cache and not strict and path.is_dir():
        with caching("folder", "all", size, data_roots(None)):
            data = cached([path], decode)
    else:
        data = decode()
    test = torch.arange(len(data)) % FOLDER_TEST_EVERY == FOLDER_TEST_EVERY - 1
    keep = test if split == "test" else ~test
    if not bool(keep.any()):
        raise DatasetError(f"image folder {path} has too few images for a {split} split "
                           f"(every {FOLDER_TEST_EVERY}th image is test; {len(data)} images)")
    return ImageData("folder", split, data.images[keep], data.labels[keep])


def to_float(images_u8: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1], the generator's output range."""
    return images_u8.float().div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
