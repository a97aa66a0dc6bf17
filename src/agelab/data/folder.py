"""Any folder of images (recursive; first-level subfolders give class labels), at a given size."""

from __future__ import annotations

import os
import warnings
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from agelab.data import DatasetError, ImageData
from agelab.data.decode import decode_images, raise_unreadable, to_image_data
from agelab.data.images import IMAGE_EXTENSIONS, cover, draft, plain
from agelab.data.lookup import natural_key


def _folder_convert(im: Image.Image, height: int, width: int) -> np.ndarray:
    draft(im, height, width)
    im = ImageOps.exif_transpose(im)
    im = plain(im)  # 'L' for grayscale sources, else 'RGB'
    return np.asarray(cover(im, height, width))


def load_image_folder(path: str | os.PathLike, size: int | tuple[int, int], *, strict: bool = False,
                      name: str = "folder", split: str = "train", progress: bool = True) -> ImageData:
    """Every image under ``path`` (recursively), resized to ``size`` (int or (height, width)).

    Files with the extensions in :data:`IMAGE_EXTENSIONS` (any case) are read;
    other files and hidden files/folders (names starting with '.') are ignored.
    Each image is EXIF-rotated, converted (:func:`~agelab.data.images.plain`: alpha onto
    white, CMYK -> RGB, 16-bit scaled to 8-bit, palette expanded), resized so it
    covers the target size and center-cropped. The result is grayscale (C = 1)
    when every image is a grayscale image (modes L, 1, LA, I;16, I, F), else RGB
    (grayscale images repeated over three channels).

    Labels: when every image lies in a first-level subfolder, label = index of
    that subfolder's name in sorted order (like torchvision's ImageFolder);
    otherwise all labels are 0. Images are ordered by label, then path.

    Unreadable files (corrupted, truncated, a text file named .png) are skipped
    with one warning that counts them, or raise a DatasetError with
    ``strict=True``. A missing or empty folder, or one without readable
    images, raises a DatasetError. ``split`` only names the returned data.
    """
    folder = Path(path).expanduser()
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist or is not a folder")
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames)
                     if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise DatasetError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    rel = [f.relative_to(folder) for f in files]
    if all(len(r.parts) >= 2 for r in rel):
        classes = sorted({r.parts[0] for r in rel})
        labels = [classes.index(r.parts[0]) for r in rel]
    else:
        labels = [0] * len(rel)
    order = sorted(range(len(files)), key=lambda i: (labels[i], natural_key(rel[i].as_posix())))
    files, rel, labels = [files[i] for i in order], [rel[i] for i in order], [labels[i] for i in order]

    images, gray, errors = decode_images([(r.as_posix(), f) for r, f in zip(rel, files)],
                                   partial(_folder_convert, height=height, width=width), height, width,
                                   f"{name} {split}", progress)
    if errors:
        if strict:
            raise_unreadable(errors, f"image folder {folder}")
        _, first, reason = errors[0]
        warnings.warn(f"skipped {len(errors)} unreadable image file(s) of {len(files)} in {folder} "
                      f"(first: {first}: {reason})", stacklevel=2)
        ok = np.ones(len(files), bool)
        ok[[i for i, _, _ in errors]] = False
        if not ok.any():
            raise DatasetError(f"none of the {len(files)} image files in {folder} could be read "
                               f"(first: {first}: {reason})")
        images, gray, labels = images[ok], gray[ok], [lab for lab, k in zip(labels, ok) if k]
    if gray.all():
        images = images[..., :1]
    return to_image_data(name, split, images, labels)
