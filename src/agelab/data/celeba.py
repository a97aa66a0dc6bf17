"""CelebA aligned faces: center crop 108x108, resized to 64x64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from agelab.data import DatasetError, ImageData
from agelab.data.archives import open_tree
from agelab.data.cache import cached
from agelab.data.decode import decode_images, raise_unreadable, to_image_data
from agelab.data.download import ensure_files
from agelab.data.images import RESAMPLE, plain
from agelab.data.lookup import bases, check_roots, check_split, searched
from agelab.errors import one_line

# CelebA: https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive / Baidu only).
CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_CROP = 108
CELEBA_SIZE = 64
CELEBA_DIRS = ("celeba", "CelebA", "")
CELEBA_PARTITION = {"train": 0, "test": 2}  # list_eval_partition.txt: 0 train, 1 valid, 2 test


def _celeba_convert(im: Image.Image) -> np.ndarray:
    im = plain(im).convert("RGB")
    w, h = im.size
    c = min(CELEBA_CROP, w, h)
    left, top = (w - c) // 2, (h - c) // 2
    im = im.crop((left, top, left + c, top + c)).resize((CELEBA_SIZE, CELEBA_SIZE), RESAMPLE)
    return np.asarray(im)


def _celeba_images(base: Path) -> Path | None:
    folder = base / "img_align_celeba"
    if folder.is_dir():
        nested = folder / "img_align_celeba"  # the Kaggle copy nests the folder once more
        return nested if nested.is_dir() else folder
    return base / "img_align_celeba.zip" if (base / "img_align_celeba.zip").is_file() else None


def load_celeba(split: str, roots: list[Path], allow_download: bool = False, *, progress: bool = True) -> ImageData:
    """CelebA aligned faces (202,599 images), center crop 108x108 resized to 64x64 (Pillow bicubic).

    Files, from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html ("Align&Cropped
    Images"; Google Drive / Baidu, no direct link, so never downloaded):
    ``img_align_celeba.zip`` (read in place) or its extracted ``img_align_celeba/``
    folder, and ``list_eval_partition.txt`` (in the same folder or its ``Eval/``
    subfolder), in a root or its ``celeba/`` subfolder. Official partition: 'train'
    is partition 0 (162,770 images), 'test' partition 2 (19,962); partition 1
    (validation) is not used. Labels are all 0. Returns (N, 3, 64, 64).
    """
    check_split(split)
    roots = check_roots(roots, "CelebA")
    for base in bases(roots, CELEBA_DIRS):
        partition = next((p for p in (base / "list_eval_partition.txt", base / "Eval" / "list_eval_partition.txt")
                          if p.is_file()), None)
        images = _celeba_images(base)
        if partition and images:
            break
    else:
        ensure_files("CelebA", roots[0] / "celeba",
                     {"img_align_celeba.zip": (None, None, None), "list_eval_partition.txt": (None, None, None)},
                     allow_download, progress=progress,
                     hint=f"get them from {CELEBA_PAGE} (Align&Cropped Images; the extracted img_align_celeba/ "
                          f"folder also works); {searched(roots, CELEBA_DIRS)}")
        raise DatasetError(f"CelebA: img_align_celeba/ (or .zip) and list_eval_partition.txt not found together; "
                           f"{searched(roots, CELEBA_DIRS)}")
    return cached([images, partition], lambda: _celeba_from(split, images, partition, progress))


def _celeba_from(split: str, images: Path, partition: Path, progress: bool) -> ImageData:
    wanted = str(CELEBA_PARTITION[split])
    files = []
    try:
        for lineno, line in enumerate(partition.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in "012":
                raise DatasetError(f"{partition}:{lineno}: expected '<file>.jpg <0|1|2>', got {line!r}")
            if fields[1] == wanted:
                files.append(fields[0])
    except OSError as exc:
        raise DatasetError(f"cannot read {partition}: {one_line(exc)}") from None
    with open_tree(images) as tree:
        by_base = {n.rsplit("/", 1)[-1]: n for n in tree.names}
        missing = [f for f in files if f not in by_base]
        if missing:
            raise DatasetError(f"{tree.where}: {len(missing)} image(s) listed in {partition.name} are missing "
                               f"(first: {missing[0]})")
        data, _, errors = decode_images([(f, tree.source(by_base[f])) for f in files], _celeba_convert,
                                  CELEBA_SIZE, CELEBA_SIZE, f"celeba {split}", progress)
        raise_unreadable(errors, f"CelebA ({tree.where})")
    return to_image_data("celeba", split, data, np.zeros(len(files), np.int64))
