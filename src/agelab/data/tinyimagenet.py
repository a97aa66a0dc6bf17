"""Tiny ImageNet (CS231n): 64x64 RGB, train/ and the labelled val/ split."""

from __future__ import annotations

import re
from pathlib import Path

from agelab.data import DatasetError, ImageData
from agelab.data.archives import find_archives, open_tree
from agelab.data.cache import cached_by_source
from agelab.data.decode import decode_images, raise_unreadable, to_image_data
from agelab.data.download import ensure_files
from agelab.data.images import exact_rgb
from agelab.data.lookup import bases, check_roots, check_split, natural_key, searched

# Tiny ImageNet: https://www.kaggle.com/c/tiny-imagenet (CS231n), archive tiny-imagenet-200.zip.
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_IMAGENET_DIRS = ("tiny-imagenet-200", "tiny-imagenet/tiny-imagenet-200", "tiny-imagenet", "tiny_imagenet", "")
TINY_IMAGENET_ARCHIVE_DIRS = ("", "tiny-imagenet", "tiny_imagenet")
TINY_IMAGENET_ARCHIVES = ("tiny-imagenet-200.zip", "tiny-imagenet*.zip", "tiny-imagenet*.tar.gz",
                          "tiny-imagenet*.tgz", "tiny-imagenet*.tar")
_IMG = r"[^/]+\.(?:jpe?g|png)"


@cached_by_source
def _tiny_imagenet_from(split: str, source: Path, progress: bool) -> ImageData:
    train_re = re.compile(rf"(?:^|/)train/([^/]+)/images/({_IMG})$", re.IGNORECASE)
    val_re = re.compile(rf"(?:^|/)val/images/({_IMG})$", re.IGNORECASE)
    wanted = train_re if split == "train" else val_re

    with open_tree(source, lambda n: bool(wanted.search(n))) as tree:
        wnid_files = sorted((n for n in tree.names if n.rsplit("/", 1)[-1] == "wnids.txt"), key=len)
        if not wnid_files:
            raise DatasetError(f"{tree.where}: no wnids.txt (Tiny ImageNet layout tiny-imagenet-200/...)")
        prefix = wnid_files[0][: -len("wnids.txt")]
        wnids = tree.read_text(wnid_files[0]).split()
        if not wnids or len(set(wnids)) != len(wnids):
            raise DatasetError(f"{tree.where}: {wnid_files[0]} is empty or lists a class twice")
        index = {w: i for i, w in enumerate(wnids)}
        items = []
        if split == "train":
            for name in tree.names:
                m = train_re.search(name)
                if m and name.startswith(prefix):
                    if m.group(1) not in index:
                        raise DatasetError(f"{tree.where}: class folder train/{m.group(1)} is not in wnids.txt")
                    items.append((index[m.group(1)], natural_key(m.group(2)), name))
        else:
            ann_name = prefix + "val/val_annotations.txt"
            if ann_name not in tree.names:
                raise DatasetError(f"{tree.where}: no {ann_name}")
            ann = {}
            for line in tree.read_text(ann_name).splitlines():
                fields = line.split("\t") if "\t" in line else line.split()
                if len(fields) >= 2:
                    ann[fields[0]] = fields[1]
            for name in tree.names:
                m = val_re.search(name)
                if m and name.startswith(prefix):
                    wnid = ann.get(m.group(1))
                    if wnid is None or wnid not in index:
                        raise DatasetError(f"{tree.where}: validation image {m.group(1)} has "
                                           + ("no annotation" if wnid is None else f"unknown class {wnid}"))
                    items.append((0, natural_key(m.group(1)), name, index[wnid]))
        if not items:
            raise DatasetError(f"{tree.where}: no Tiny ImageNet {split} images")
        items.sort()
        labels = [it[0] if split == "train" else it[3] for it in items]
        images, _, errors = decode_images([(it[2], tree.source(it[2])) for it in items], exact_rgb, 64, 64,
                                    f"tiny-imagenet {split}", progress)
        raise_unreadable(errors, f"Tiny ImageNet ({tree.where})")
    return to_image_data("tinyimagenet", split, images, labels)


def load_tiny_imagenet(split: str, roots: list[Path], allow_download: bool = False, *,
                       progress: bool = True) -> ImageData:
    """Tiny ImageNet (CS231n), 64x64 RGB. Returns (N, 3, 64, 64); labels index wnids.txt.

    Official layout (archive ``tiny-imagenet-200.zip`` from
    http://cs231n.stanford.edu/tiny-imagenet-200.zip, md5 90528d7ca1a48142e341f4ef8d21d0de):
    ``tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG,
    val/val_annotations.txt}``. 'train' is train/ (100,000 images officially),
    'test' is the labelled validation set val/ (10,000); the unlabelled test/ is
    not used. The class count is the number of lines of wnids.txt (200 officially;
    the offline copy lists 202, with 100 training images per class), label = line
    index. Grayscale JPEGs are converted to RGB. Read from the extracted folder,
    or in place from ``tiny-imagenet-200.zip`` or any ``tiny-imagenet*.tar.gz`` /
    ``.zip`` in a root or its ``tiny-imagenet/`` subfolder (the offline copy is
    ``tiny-imagenet/tiny-imagenet-202-subset.tar.gz``).
    """
    check_split(split)
    roots = check_roots(roots, "Tiny ImageNet")
    for root in roots:
        for base in bases([root], TINY_IMAGENET_DIRS):
            if (base / "wnids.txt").is_file() and (base / ("train" if split == "train" else "val")).is_dir():
                return _tiny_imagenet_from(split, base, progress)
        for base in bases([root], TINY_IMAGENET_ARCHIVE_DIRS):
            archives = find_archives(base, TINY_IMAGENET_ARCHIVES)
            if archives:
                return _tiny_imagenet_from(split, archives[0], progress)
    paths = ensure_files("Tiny ImageNet", roots[0] / "tiny-imagenet",
                         {"tiny-imagenet-200.zip": (TINY_IMAGENET_URL, None, TINY_IMAGENET_MD5)}, allow_download,
                         progress=progress, hint="the extracted tiny-imagenet-200/ folder also works; "
                         + searched(roots, TINY_IMAGENET_DIRS))
    return _tiny_imagenet_from(split, paths["tiny-imagenet-200.zip"], progress)
