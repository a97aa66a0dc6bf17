"""Threaded image decoding: many files (paths, bytes or readers) into one uint8 array.

JPEGs are decoded with Pillow by a pool of :data:`WORKERS` threads, :data:`CHUNK` images per
task (Pillow releases the GIL while decoding), with a tqdm bar for 1,000 images or more. An
image that cannot be read is reported, not raised: :func:`raise_unreadable` turns the report
into a DatasetError for the loaders that accept no unreadable file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from agelab.data import DatasetError, ImageData
from agelab.data.images import open_image
from agelab.errors import one_line

WORKERS = 2  # decoding threads (Pillow releases the GIL while decoding)
CHUNK = 64  # images per decoding task


def to_image_data(name: str, split: str, images_nhwc: np.ndarray, labels) -> ImageData:
    """Decoded (N, H, W, C) uint8 images and their labels as an :class:`~agelab.data.ImageData` (N, C, H, W)."""
    images = torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2).contiguous()
    return ImageData(name, split, images, torch.as_tensor(np.asarray(labels, dtype=np.int64)))


def decode_images(items: Sequence[tuple[str, object]], convert: Callable[[Image.Image], np.ndarray],
                  height: int, width: int, desc: str, progress: bool = True):
    """Decode ``items`` ((name, Path | bytes | callable)) into an (N, H, W, 3) uint8 array.

    ``convert`` returns (H, W, 3) RGB or (H, W) grayscale (copied into all three
    channels, flagged in ``gray``). Returns (images, gray, errors) where errors
    lists (index, name, reason) of the images that could not be read.
    """
    n = len(items)
    out = np.empty((n, height, width, 3), np.uint8)
    gray = np.zeros(n, bool)
    errors: list[tuple[int, str, str]] = []

    def work(lo: int, hi: int):
        errs = []
        for i in range(lo, hi):
            name, src = items[i]
            try:
                with open_image(src) as im:
                    arr = convert(im)
                if arr.shape[:2] != (height, width):
                    raise ValueError(f"size {arr.shape[1]}x{arr.shape[0]}, expected {width}x{height}")
                if arr.ndim == 2:
                    out[i] = arr[..., None]
                    gray[i] = True
                else:
                    out[i] = arr
            except Exception as exc:  # any decoder failure makes this one image unreadable
                errs.append((i, name, f"{type(exc).__name__}: {one_line(exc)}"))
        return hi - lo, errs

    bar = tqdm(total=n, desc=desc, unit="img", leave=False, disable=None if progress and n >= 1000 else True)
    with bar, ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="agelab-decode") as pool:
        futures = [pool.submit(work, lo, min(lo + CHUNK, n)) for lo in range(0, n, CHUNK)]
        try:
            for fut in as_completed(futures):
                done, errs = fut.result()
                errors.extend(errs)
                bar.update(done)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    errors.sort()
    return out, gray, errors


def raise_unreadable(errors: list[tuple[int, str, str]], what: str) -> None:
    """A DatasetError naming the first unreadable image (and how many more), if :func:`decode_images` reported any."""
    if errors:
        _, name, reason = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DatasetError(f"{what}: cannot read image {name}: {reason}{more}")
