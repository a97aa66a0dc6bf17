"""CIFAR-10: the official python batches, read by a restricted unpickler, or the JPEG layout."""

from __future__ import annotations

import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import torch

from agelab.data import DatasetError, ImageData
from agelab.data.archives import open_tree
from agelab.data.cache import cached_by_source
from agelab.data.decode import decode_images, raise_unreadable, to_image_data
from agelab.data.download import ensure_files
from agelab.data.images import exact_rgb
from agelab.data.lookup import bases, check_roots, check_split, natural_key, searched
from agelab.errors import one_line

# CIFAR-10: https://www.cs.toronto.edu/~kriz/cifar.html, "CIFAR-10 python version".
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 writes bytes in protocol-2 pickles; latin-1 only."""
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") != "latin1":
        raise pickle.UnpicklingError("refusing _codecs.encode other than str -> latin-1 bytes")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
    if hasattr(numeric, "_frombuffer"):
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            allowed[(mod, "_frombuffer")] = numeric._frombuffer
    return allowed


class SafeCifarUnpickler(pickle.Unpickler):
    """An unpickler for the CIFAR-10 python batches that can build nothing but data.

    The official batch files (Python 2 pickles) hold a dict of str/bytes keys,
    a list of int labels, a list of file names and one numpy uint8 array under
    ``data``. Plain containers, strings, bytes and numbers need no globals; the
    ONLY globals resolved are numpy's array-reconstruction entry points:

    - ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``
      (how protocol <= 4 pickles rebuild an ndarray), ``numpy.ndarray``, ``numpy.dtype``;
    - ``numpy.core.numeric._frombuffer`` / ``numpy._core.numeric._frombuffer``
      (protocol 5 pickles written by recent numpy);
    - ``_codecs.encode``, restricted to str -> latin-1 bytes (how Python 3 writes
      bytes in protocol <= 2 pickles).

    Any other global (``os.system``, ``builtins.eval``, any other numpy function)
    raises ``pickle.UnpicklingError`` before it is imported or called, so a
    malicious batch file cannot run code. Persistent ids are refused too.
    """

    _allowed: dict[tuple[str, str], object] | None = None

    def find_class(self, module: str, name: str):
        if SafeCifarUnpickler._allowed is None:
            SafeCifarUnpickler._allowed = _allowed_globals()
        try:
            return SafeCifarUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent id")


def read_cifar_batch(f, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR-10 python batch (a binary file object) safely: ((n, 3, 32, 32) uint8, (n,) int64)."""
    try:
        batch = SafeCifarUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, TypeError ...
        raise DatasetError(f"cannot read CIFAR-10 batch {where}: {type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"CIFAR-10 batch {where} is not a dict")

    def get(key: str):
        for k in (key, key.encode()):
            if k in batch:
                return batch[k]
        raise DatasetError(f"CIFAR-10 batch {where} has no {key!r} entry")

    data, labels = get("data"), get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"CIFAR-10 batch {where}: 'data' must be a uint8 (N, 3072) array, got {what}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DatasetError(f"CIFAR-10 batch {where}: 'labels' is not a list of integers") from None
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DatasetError(f"CIFAR-10 batch {where}: {labels.shape[0] if labels.ndim else 0} labels in 0..9 "
                           f"expected for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), labels


@cached_by_source
def _cifar_from_batches(split: str, source: Path) -> ImageData:
    wanted = CIFAR10_BATCHES[split]
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if source.is_dir():
        for b in wanted:
            path = source / b
            try:
                with open(path, "rb") as f:
                    parts[b] = read_cifar_batch(f, str(path))
            except OSError as exc:
                raise DatasetError(f"cannot read CIFAR-10 batch {path}: {one_line(exc)}") from None
    else:
        try:
            with tarfile.open(source, "r|*") as tf:
                for m in tf:
                    base = m.name.rsplit("/", 1)[-1]
                    if m.isfile() and base in wanted and base not in parts:
                        parts[base] = read_cifar_batch(tf.extractfile(m), f"{source}:{m.name}")
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise DatasetError(f"cannot read {source}: {one_line(exc)}") from None
        missing = [b for b in wanted if b not in parts]
        if missing:
            raise DatasetError(f"{source} lacks CIFAR-10 batch(es) {', '.join(missing)}")
    images = np.concatenate([parts[b][0] for b in wanted])
    labels = np.concatenate([parts[b][1] for b in wanted])
    return ImageData("cifar10", split, torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))


_CIFAR_JPG = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+\.(?:jpe?g|png))$", re.IGNORECASE)


@cached_by_source
def _cifar_from_jpegs(split: str, source: Path, progress: bool) -> ImageData:
    def keep(name: str) -> bool:
        m = _CIFAR_JPG.search(name)
        return bool(m) and m.group(1).lower() == split

    with open_tree(source, keep) as tree:
        items = []
        for name in tree.names:
            m = _CIFAR_JPG.search(name)
            if m and m.group(1).lower() == split:
                cls = m.group(2)
                if cls not in CIFAR10_CLASSES:
                    raise DatasetError(f"{tree.where}: unexpected CIFAR-10 class folder {split}/{cls} "
                                       f"(expected {', '.join(CIFAR10_CLASSES)})")
                items.append((CIFAR10_CLASSES.index(cls), natural_key(m.group(3)), name))
        if not items:
            raise DatasetError(f"{tree.where}: no {split}/<class>/*.jpg images (CIFAR-10 JPEG layout)")
        items.sort()
        images, _, errors = decode_images([(n, tree.source(n)) for _, _, n in items], exact_rgb, 32, 32,
                                    f"cifar10 {split}", progress)
        raise_unreadable(errors, f"CIFAR-10 ({tree.where})")
    return to_image_data("cifar10", split, images, [label for label, _, _ in items])


CIFAR10_DIRS = ("cifar10", "cifar-10", "CIFAR10", "")


def _is_cifar_jpeg_folder(folder: Path) -> bool:
    return any((folder / "train" / c).is_dir() or (folder / "test" / c).is_dir() for c in CIFAR10_CLASSES)


def load_cifar10(split: str, roots: list[Path], allow_download: bool = False, *,
                 progress: bool = True) -> ImageData:
    """CIFAR-10, 50,000 train / 10,000 test 32x32 RGB images, 10 classes. Returns (N, 3, 32, 32).

    Accepted, in this order of preference in each root (and its ``cifar10/``,
    ``cifar-10/``, ``CIFAR10/`` subfolders):

    1. the official python version, https://www.cs.toronto.edu/~kriz/cifar.html:
       the extracted ``cifar-10-batches-py/`` folder (``data_batch_1`` ..
       ``data_batch_5``, ``test_batch``) or ``cifar-10-python.tar.gz`` read in
       place (md5 c58f30108f718f92721af3b95e74349a). The pickles are parsed by
       :class:`SafeCifarUnpickler`, which refuses every global except numpy's
       array reconstruction: ``pickle.load`` is never called on these files.
    2. the JPEG layout of the offline copy: ``cifar10-jpg.tar.gz`` (or its
       extracted folder) holding ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``.
       Labels are the class-folder names' indices in sorted order, which is the
       official order airplane, automobile, bird, cat, deer, dog, frog, horse,
       ship, truck. Images are ordered by class, then file name (not the official
       order), and are JPEG re-encodings: close to, not equal to, the official pixels.

    With ``allow_download`` the official ``cifar-10-python.tar.gz`` is fetched
    into ``<first root>/cifar10/`` and read from there.
    """
    check_split(split)
    roots = check_roots(roots, "CIFAR-10")
    for base in bases(roots, CIFAR10_DIRS):
        batches = base / "cifar-10-batches-py"
        if all((batches / b).is_file() for b in CIFAR10_BATCHES[split]):
            return _cifar_from_batches(split, batches)
        if (base / "cifar-10-python.tar.gz").is_file():
            return _cifar_from_batches(split, base / "cifar-10-python.tar.gz")
        for folder in (base, base / "cifar10-jpg"):
            if _is_cifar_jpeg_folder(folder):
                return _cifar_from_jpegs(split, folder, progress)
        if (base / "cifar10-jpg.tar.gz").is_file():
            return _cifar_from_jpegs(split, base / "cifar10-jpg.tar.gz", progress)
    paths = ensure_files("CIFAR-10", roots[0] / "cifar10",
                         {"cifar-10-python.tar.gz": (CIFAR10_URL, None, CIFAR10_MD5)}, allow_download,
                         progress=progress,
                         hint="the extracted cifar-10-batches-py/ or cifar10-jpg.tar.gz also work; "
                              + searched(roots, CIFAR10_DIRS))
    return _cifar_from_batches(split, paths["cifar-10-python.tar.gz"])
