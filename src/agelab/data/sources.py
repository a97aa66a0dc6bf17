"""Dataset sources: one loader per dataset, each returning an :class:`~agelab.data.ImageData`.

Every ``load_<name>(split, roots, allow_download=False)`` returns the official
``'train'`` or ``'test'`` split at the dataset's NATIVE resolution (uint8
images (N, C, H, W), int64 labels (N,)); bringing images to the training size
is done elsewhere (:func:`agelab.data.fit_to_size`). The exceptions, as in the
AGE paper's setups, are CelebA (center crop 108x108, resized to 64x64) and
Stanford Cars (shorter side to 64, center crop 64x64): their native images
have no common size.

``roots`` are searched in order (:func:`agelab.data.data_roots`: --data-root,
$AGELAB_DATA, the per-user cache), each with the dataset's usual subfolder
names (``cifar10/``, ``tiny-imagenet/`` ...), so the offline copies described
in ``shared/data/README.md`` are found with ``--data-root shared/data`` and
read in place: archives (.tar.gz, .zip) are read without being extracted.
When nothing is found, ``allow_download=True`` fetches the official files
(checksummed, see :mod:`agelab.data.download`) into the dataset's subfolder of
the FIRST root; otherwise, and for datasets without a direct link (CelebA,
Stanford Cars), a one-line DatasetError says which files to place where.

JPEGs are decoded with Pillow by a pool of :data:`WORKERS` threads (with a
tqdm bar for large folders). Images in modes other than RGB/L are converted:
RGBA/LA/transparent palette images are composited onto white, CMYK and YCbCr
are converted to RGB, 16-bit grayscale ('I;16', 'I') is scaled from 0..65535
to 0..255.

:data:`SOURCES` maps the dataset names used by the command line to loaders;
:func:`load_image_folder` reads any folder of images (it needs a size).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import tarfile
import threading
import warnings
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial, wraps
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from agelab.data import DatasetError, ImageData
from agelab.data.cache import cached
from agelab.data.download import ensure_files
from agelab.errors import one_line

WORKERS = 2  # decoding threads (Pillow releases the GIL while decoding)
CHUNK = 64  # images per decoding task
RESAMPLE = Image.Resampling.BICUBIC  # Pillow's resize is antialiased when downscaling
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
SPLITS = ("train", "test")

# --- official sources ---------------------------------------------------------------------
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
# CIFAR-10: https://www.cs.toronto.edu/~kriz/cifar.html, "CIFAR-10 python version".
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
# SVHN: http://ufldl.stanford.edu/housenumbers/ ("Format 2: cropped digits").
SVHN_FILES = {
    "train": ("train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
              "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": ("test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
             "eb5a983be6a315427106f1b164d9cef3"),
}
# CelebA: https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive / Baidu only).
CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_CROP = 108
CELEBA_SIZE = 64
# Tiny ImageNet: https://www.kaggle.com/c/tiny-imagenet (CS231n), archive tiny-imagenet-200.zip.
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
# Stanford Cars: https://ai.stanford.edu/~jkrause/cars/car_dataset.html (the original links are
# gone; mirrors of cars_train.tgz, cars_test.tgz, car_devkit.tgz and
# cars_test_annos_withlabels.mat exist, e.g. on Kaggle).
CARS_PAGE = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"
CARS_SIZE = 64
CARS_TEST_EVERY = 10  # train-only copy: images 10, 20, 30, ... (1-based file order) are 'test'


# =============================================================================================
# small helpers
# =============================================================================================
def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _check_roots(roots: Sequence[Path], name: str) -> list[Path]:
    roots = [Path(r).expanduser() for r in roots]
    if not roots:
        raise DatasetError(f"{name}: no data folder to search; pass --data-root or set AGELAB_DATA")
    return roots


def _bases(roots: Sequence[Path], subdirs: Sequence[str]) -> list[Path]:
    """Existing folders root/<subdir> ("" = the root itself), root by root, without repeats."""
    out: list[Path] = []
    for root in roots:
        for sub in subdirs:
            p = root / sub if sub else root
            if p not in out and p.is_dir():
                out.append(p)
    return out


def _searched(roots: Sequence[Path], subdirs: Sequence[str]) -> str:
    shown = ", ".join(str(r) for r in roots)
    subs = ", ".join(f"{s}/" for s in subdirs if s)
    return f"searched {shown}" + (f" and their subfolders {subs}" if subs else "")


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _image_data(name: str, split: str, images_nhwc: np.ndarray, labels) -> ImageData:
    images = torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2).contiguous()
    return ImageData(name, split, images, torch.as_tensor(np.asarray(labels, dtype=np.int64)))


def _cached_by_source(decode: Callable[..., ImageData]) -> Callable[..., ImageData]:
    """``decode(split, source, ...)`` served from the decoded-image cache, keyed by ``source``'s fingerprint."""
    @wraps(decode)
    def wrapper(split: str, source: Path, *args) -> ImageData:
        return cached([source], lambda: decode(split, source, *args))
    return wrapper


# =============================================================================================
# file trees: a folder, a .zip or a .tar(.gz) read in place
# =============================================================================================
class _Tree:
    """Files under a folder or inside an archive, by relative POSIX path."""

    where: str
    names: list[str]

    def source(self, name: str):  # Path, bytes or a callable returning bytes
        raise NotImplementedError

    def read_bytes(self, name: str) -> bytes:
        src = self.source(name)
        if isinstance(src, Path):
            return src.read_bytes()
        return src if isinstance(src, bytes) else src()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode("utf-8", errors="replace")

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FolderTree(_Tree):
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.where = str(self.folder)
        names = []
        for dirpath, dirnames, filenames in os.walk(self.folder):
            dirnames.sort()
            rel = Path(dirpath).relative_to(self.folder).as_posix()
            prefix = "" if rel == "." else rel + "/"
            names.extend(prefix + f for f in sorted(filenames))
        self.names = names

    def source(self, name: str) -> Path:
        return self.folder / name


class _ZipTree(_Tree):
    """A zip read in place; members are read under a lock (decoding runs in parallel)."""

    def __init__(self, path: Path):
        self.where = str(path)
        self.zip = zipfile.ZipFile(path)
        self.lock = threading.Lock()
        self.names = [i.filename for i in self.zip.infolist() if not i.is_dir()]

    def _read(self, name: str) -> bytes:
        with self.lock:
            return self.zip.read(name)

    def source(self, name: str):
        return partial(self._read, name)

    def close(self) -> None:
        self.zip.close()


class _TarTree(_Tree):
    """A tar(.gz) read once, sequentially; members for which ``keep(name)`` is true are kept in memory."""

    def __init__(self, path: Path, keep: Callable[[str], bool]):
        self.where = str(path)
        self.names, self.data = [], {}
        with tarfile.open(path, "r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                name = m.name[2:] if m.name.startswith("./") else m.name
                self.names.append(name)
                if keep(name) or name.endswith(".txt"):
                    f = tf.extractfile(m)
                    self.data[name] = f.read() if f is not None else b""

    def source(self, name: str) -> bytes:
        try:
            return self.data[name]
        except KeyError:
            raise DatasetError(f"{self.where}: member {name} was not read") from None


def _open_tree(path: Path, keep: Callable[[str], bool] = lambda name: True) -> _Tree:
    """A folder, a .zip or a tar archive (any compression tarfile reads) as a :class:`_Tree`."""
    try:
        if path.is_dir():
            return _FolderTree(path)
        if zipfile.is_zipfile(path):
            return _ZipTree(path)
        return _TarTree(path, keep)
    except DatasetError:
        raise
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {one_line(exc)}") from None
    except Exception as exc:  # zlib.error, lzma.LZMAError ... from a damaged archive
        raise DatasetError(f"cannot read {path}: {type(exc).__name__}: {one_line(exc)}") from None


def _archives(folder: Path, patterns: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for pattern in patterns:
        out.extend(p for p in sorted(folder.glob(pattern)) if p.is_file() and p not in out)
    return out


# =============================================================================================
# decoding
# =============================================================================================
def _white(im: Image.Image) -> Image.Image:
    """Composite an image with alpha onto white; returns RGB."""
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _plain(im: Image.Image) -> Image.Image:
    """Bring any Pillow mode to 'L' (grayscale sources) or 'RGB' (everything else)."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return im
    if mode == "P":
        if "transparency" in im.info:
            return _white(im)
        return im.convert("RGB")
    if mode in ("1",):
        return im.convert("L")
    if mode in ("LA", "La"):
        return _white(im).convert("L")
    if mode in ("RGBA", "RGBa", "PA"):
        return _white(im)
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (PNG/TIFF): Pillow's convert('L') would clip at 255; scale instead.
        arr = np.asarray(im).astype(np.float32) / 257.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        if np.nanmax(arr, initial=0.0) <= 1.0:  # float images in [0, 1]
            arr = arr * 255.0
        return Image.fromarray(np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def _rgb(im: Image.Image) -> np.ndarray:
    return np.asarray(_plain(im).convert("RGB"))


def _cover(im: Image.Image, height: int, width: int) -> Image.Image:
    """Resize so the image covers height x width (aspect kept), then center-crop to it."""
    iw, ih = im.size
    scale = max(width / iw, height / ih)
    nw, nh = max(width, round(iw * scale)), max(height, round(ih * scale))
    if (nw, nh) != (iw, ih):
        im = im.resize((nw, nh), RESAMPLE)
    left, top = (nw - width) // 2, (nh - height) // 2
    return im.crop((left, top, left + width, top + height))


def _draft(im: Image.Image, height: int, width: int) -> None:
    """Let libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale when that still covers the target
    (in either orientation, since EXIF rotation may swap the sides)."""
    if im.format != "JPEG":
        return
    iw, ih = im.size
    scale = max(width / iw, height / ih, width / ih, height / iw)
    if scale < 0.5:
        im.draft(None, (math.ceil(iw * scale), math.ceil(ih * scale)))


def _exact_rgb(im: Image.Image) -> np.ndarray:
    return _rgb(im)


def _cover_rgb(im: Image.Image, height: int, width: int) -> np.ndarray:
    _draft(im, height, width)
    return np.asarray(_cover(_plain(im).convert("RGB"), height, width))


def _celeba_convert(im: Image.Image) -> np.ndarray:
    im = _plain(im).convert("RGB")
    w, h = im.size
    c = min(CELEBA_CROP, w, h)
    left, top = (w - c) // 2, (h - c) // 2
    im = im.crop((left, top, left + c, top + c)).resize((CELEBA_SIZE, CELEBA_SIZE), RESAMPLE)
    return np.asarray(im)


def _open_image(src) -> Image.Image:
    if isinstance(src, Path):
        if src.is_symlink() and not src.exists():
            raise FileNotFoundError(f"dangling symbolic link (to {os.readlink(src)})")
        return Image.open(src)
    if not isinstance(src, (bytes, bytearray)):
        src = src()
    return Image.open(io.BytesIO(src))


def _decode(items: Sequence[tuple[str, object]], convert: Callable[[Image.Image], np.ndarray],
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
                with _open_image(src) as im:
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


def _strict(errors: list[tuple[int, str, str]], what: str) -> None:
    if errors:
        _, name, reason = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DatasetError(f"{what}: cannot read image {name}: {reason}{more}")


# =============================================================================================
# MNIST and Fashion-MNIST (IDX files)
# =============================================================================================
FASHION_MNIST_DIRS = ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST")
MNIST_DIRS = ("mnist", "MNIST/raw", "")  # the first is where downloads go
IDX_DATASETS = {
    "mnist": dict(title="MNIST", dirs=MNIST_DIRS, mirrors=MNIST_MIRRORS, md5=MNIST_MD5),
    "fashion-mnist": dict(title="Fashion-MNIST", dirs=FASHION_MNIST_DIRS, mirrors=FASHION_MNIST_MIRRORS,
                          md5=FASHION_MNIST_MD5),
}


def _idx_from(name: str, split: str, found: Sequence[Path]) -> ImageData:
    """Images and labels of an MNIST-type dataset from its two IDX files (gzip or not)."""
    from agelab.data.mnist import read_idx

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
    _check_split(split)
    roots = _check_roots(roots, spec["title"])
    names = IDX_FILES[split]
    for base in _bases(roots, spec["dirs"]):
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
                             progress=progress, hint=_searched(roots, spec["dirs"]))
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


# =============================================================================================
# CIFAR-10
# =============================================================================================
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


@_cached_by_source
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


@_cached_by_source
def _cifar_from_jpegs(split: str, source: Path, progress: bool) -> ImageData:
    def keep(name: str) -> bool:
        m = _CIFAR_JPG.search(name)
        return bool(m) and m.group(1).lower() == split

    with _open_tree(source, keep) as tree:
        items = []
        for name in tree.names:
            m = _CIFAR_JPG.search(name)
            if m and m.group(1).lower() == split:
                cls = m.group(2)
                if cls not in CIFAR10_CLASSES:
                    raise DatasetError(f"{tree.where}: unexpected CIFAR-10 class folder {split}/{cls} "
                                       f"(expected {', '.join(CIFAR10_CLASSES)})")
                items.append((CIFAR10_CLASSES.index(cls), _natural_key(m.group(3)), name))
        if not items:
            raise DatasetError(f"{tree.where}: no {split}/<class>/*.jpg images (CIFAR-10 JPEG layout)")
        items.sort()
        images, _, errors = _decode([(n, tree.source(n)) for _, _, n in items], _exact_rgb, 32, 32,
                                    f"cifar10 {split}", progress)
        _strict(errors, f"CIFAR-10 ({tree.where})")
    return _image_data("cifar10", split, images, [label for label, _, _ in items])


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
    _check_split(split)
    roots = _check_roots(roots, "CIFAR-10")
    for base in _bases(roots, CIFAR10_DIRS):
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
                              + _searched(roots, CIFAR10_DIRS))
    return _cifar_from_batches(split, paths["cifar-10-python.tar.gz"])


# =============================================================================================
# SVHN
# =============================================================================================
SVHN_DIRS = ("svhn", "SVHN", "")


def load_svhn(split: str, roots: list[Path], allow_download: bool = False, *, progress: bool = True) -> ImageData:
    """SVHN cropped digits, 73,257 train / 26,032 test 32x32 RGB images. Returns (N, 3, 32, 32).

    Files: ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5, read with
    scipy.io.loadmat) from http://ufldl.stanford.edu/housenumbers/ (md5
    e26dedcc434d2e4c54c9b2d4a06d8373 and eb5a983be6a315427106f1b164d9cef3), in a
    root or its ``svhn/`` subfolder. ``X`` is (32, 32, 3, N); label 10 means the
    digit 0, so labels are 0..9. The ``extra`` set is not used.
    """
    _check_split(split)
    roots = _check_roots(roots, "SVHN")
    filename, url, md5 = SVHN_FILES[split]
    path = next((b / filename for b in _bases(roots, SVHN_DIRS) if (b / filename).is_file()), None)
    if path is None:
        path = ensure_files("SVHN", roots[0] / "svhn", {filename: (url, None, md5)}, allow_download,
                            progress=progress, hint=_searched(roots, SVHN_DIRS))[filename]
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


# =============================================================================================
# CelebA
# =============================================================================================
CELEBA_DIRS = ("celeba", "CelebA", "")
CELEBA_PARTITION = {"train": 0, "test": 2}  # list_eval_partition.txt: 0 train, 1 valid, 2 test


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
    _check_split(split)
    roots = _check_roots(roots, "CelebA")
    for base in _bases(roots, CELEBA_DIRS):
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
                          f"folder also works); {_searched(roots, CELEBA_DIRS)}")
        raise DatasetError(f"CelebA: img_align_celeba/ (or .zip) and list_eval_partition.txt not found together; "
                           f"{_searched(roots, CELEBA_DIRS)}")
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
    with _open_tree(images) as tree:
        by_base = {n.rsplit("/", 1)[-1]: n for n in tree.names}
        missing = [f for f in files if f not in by_base]
        if missing:
            raise DatasetError(f"{tree.where}: {len(missing)} image(s) listed in {partition.name} are missing "
                               f"(first: {missing[0]})")
        data, _, errors = _decode([(f, tree.source(by_base[f])) for f in files], _celeba_convert,
                                  CELEBA_SIZE, CELEBA_SIZE, f"celeba {split}", progress)
        _strict(errors, f"CelebA ({tree.where})")
    return _image_data("celeba", split, data, np.zeros(len(files), np.int64))


# =============================================================================================
# Tiny ImageNet
# =============================================================================================
TINY_IMAGENET_DIRS = ("tiny-imagenet-200", "tiny-imagenet/tiny-imagenet-200", "tiny-imagenet", "tiny_imagenet", "")
TINY_IMAGENET_ARCHIVE_DIRS = ("", "tiny-imagenet", "tiny_imagenet")
TINY_IMAGENET_ARCHIVES = ("tiny-imagenet-200.zip", "tiny-imagenet*.zip", "tiny-imagenet*.tar.gz",
                          "tiny-imagenet*.tgz", "tiny-imagenet*.tar")
_IMG = r"[^/]+\.(?:jpe?g|png)"


@_cached_by_source
def _tiny_imagenet_from(split: str, source: Path, progress: bool) -> ImageData:
    train_re = re.compile(rf"(?:^|/)train/([^/]+)/images/({_IMG})$", re.IGNORECASE)
    val_re = re.compile(rf"(?:^|/)val/images/({_IMG})$", re.IGNORECASE)
    wanted = train_re if split == "train" else val_re

    with _open_tree(source, lambda n: bool(wanted.search(n))) as tree:
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
                    items.append((index[m.group(1)], _natural_key(m.group(2)), name))
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
                    items.append((0, _natural_key(m.group(1)), name, index[wnid]))
        if not items:
            raise DatasetError(f"{tree.where}: no Tiny ImageNet {split} images")
        items.sort()
        labels = [it[0] if split == "train" else it[3] for it in items]
        images, _, errors = _decode([(it[2], tree.source(it[2])) for it in items], _exact_rgb, 64, 64,
                                    f"tiny-imagenet {split}", progress)
        _strict(errors, f"Tiny ImageNet ({tree.where})")
    return _image_data("tinyimagenet", split, images, labels)


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
    _check_split(split)
    roots = _check_roots(roots, "Tiny ImageNet")
    for root in roots:
        for base in _bases([root], TINY_IMAGENET_DIRS):
            if (base / "wnids.txt").is_file() and (base / ("train" if split == "train" else "val")).is_dir():
                return _tiny_imagenet_from(split, base, progress)
        for base in _bases([root], TINY_IMAGENET_ARCHIVE_DIRS):
            archives = _archives(base, TINY_IMAGENET_ARCHIVES)
            if archives:
                return _tiny_imagenet_from(split, archives[0], progress)
    paths = ensure_files("Tiny ImageNet", roots[0] / "tiny-imagenet",
                         {"tiny-imagenet-200.zip": (TINY_IMAGENET_URL, None, TINY_IMAGENET_MD5)}, allow_download,
                         progress=progress, hint="the extracted tiny-imagenet-200/ folder also works; "
                         + _searched(roots, TINY_IMAGENET_DIRS))
    return _tiny_imagenet_from(split, paths["tiny-imagenet-200.zip"], progress)


# =============================================================================================
# Stanford Cars
# =============================================================================================
CARS_DIRS = ("stanford-cars/stanford-cars", "stanford-cars", "stanford_cars", "StanfordCars", "cars", "")
CARS_ARCHIVES = ("cars-train*.tar.gz", "cars-train*.tgz", "cars-train*.tar", "cars-train*.zip")


def _cars_annotations(path: Path) -> list[tuple[str, int]]:
    """(file name, class 1..196) of a devkit annotation .mat (struct array ``annotations``)."""
    import scipy.io

    try:
        ann = scipy.io.loadmat(path, squeeze_me=True, variable_names=["annotations"])["annotations"]
        ann = np.atleast_1d(ann)
        return [(str(f).strip(), int(c)) for f, c in zip(ann["fname"], ann["class"])]
    except Exception as exc:
        raise DatasetError(f"cannot read Stanford Cars annotations {path}: {type(exc).__name__}: "
                           f"{one_line(exc)}") from None


def _cars_convert(im: Image.Image) -> np.ndarray:
    return _cover_rgb(im, CARS_SIZE, CARS_SIZE)


def _cars_decode(split: str, tree: _Tree, names: list[str], labels: list[int], progress: bool) -> ImageData:
    if not names:
        raise DatasetError(f"{tree.where}: no Stanford Cars {split} images")
    lab = np.asarray(labels, dtype=np.int64) - 1
    if lab.min() < 0 or lab.max() > 195:
        raise DatasetError(f"{tree.where}: Stanford Cars class ids must be 1..196")
    images, _, errors = _decode([(n, tree.source(n)) for n in names], _cars_convert, CARS_SIZE, CARS_SIZE,
                                f"cars {split}", progress)
    _strict(errors, f"Stanford Cars ({tree.where})")
    return _image_data("cars", split, images, lab)


_CARS_TRAIN_JPG = re.compile(r"(?:^|/)cars_train/([^/]+\.jpe?g)$", re.IGNORECASE)


@_cached_by_source
def _cars_train_only(split: str, source: Path, progress: bool) -> ImageData:
    with _open_tree(source, lambda n: bool(_CARS_TRAIN_JPG.search(n))) as tree:
        preds = sorted((n for n in tree.names if n.rsplit("/", 1)[-1] == "train_perfect_preds.txt"), key=len)
        if not preds:
            raise DatasetError(f"{tree.where}: no train_perfect_preds.txt")
        prefix = preds[0][: -len("train_perfect_preds.txt")]
        names = sorted((n for n in tree.names if n.startswith(prefix) and _CARS_TRAIN_JPG.search(n)
                        and "/" not in n[len(prefix) + len("cars_train/"):]), key=_natural_key)
        try:
            labels = [int(t) for t in tree.read_text(preds[0]).split()]
        except ValueError:
            raise DatasetError(f"{tree.where}: {preds[0]} must hold one class id per line") from None
        if len(labels) != len(names):
            raise DatasetError(f"{tree.where}: {len(names)} images in cars_train/ but {len(labels)} labels in "
                               f"{preds[0]}")
        test = np.arange(len(names)) % CARS_TEST_EVERY == CARS_TEST_EVERY - 1
        keep = test if split == "test" else ~test
        picked = [n for n, k in zip(names, keep) if k]
        picked_labels = [lab for lab, k in zip(labels, keep) if k]
        return _cars_decode(split, tree, picked, picked_labels, progress)


@_cached_by_source
def _cars_devkit(split: str, base: Path, progress: bool) -> ImageData:
    if split == "train":
        folder, ann_path = base / "cars_train", base / "devkit" / "cars_train_annos.mat"
    else:
        folder = base / "cars_test"
        ann_path = next((p for p in (base / "cars_test_annos_withlabels.mat",
                                     base / "devkit" / "cars_test_annos_withlabels.mat") if p.is_file()),
                        base / "cars_test_annos_withlabels.mat")
    ensure_files("Stanford Cars", base,
                 {folder.name + "/": (None, None, None), str(ann_path.relative_to(base)): (None, None, None)},
                 False, hint=f"get them from {CARS_PAGE} or a mirror (e.g. Kaggle): extract cars_train.tgz, "
                             "cars_test.tgz, car_devkit.tgz")
    annotations = _cars_annotations(ann_path)
    with _open_tree(folder) as tree:
        names = [a[0] for a in annotations]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DatasetError(f"{folder}: {len(missing)} image(s) listed in {ann_path.name} are missing "
                               f"(first: {missing[0]})")
        return _cars_decode(split, tree, names, [a[1] for a in annotations], progress)


def load_stanford_cars(split: str, roots: list[Path], allow_download: bool = False, *,
                       progress: bool = True) -> ImageData:
    """Stanford Cars (196 car models), resized to 64x64 (shorter side to 64, center crop). Returns (N, 3, 64, 64).

    Two layouts, looked up in a root or its ``stanford-cars/``, ``stanford_cars/``,
    ``cars/`` subfolders (https://ai.stanford.edu/~jkrause/cars/car_dataset.html;
    the original links are gone and there is no download):

    - the official devkit layout (extracted ``cars_train.tgz``, ``cars_test.tgz``,
      ``car_devkit.tgz``): ``cars_train/``, ``cars_test/``,
      ``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat``
      (in the folder or in ``devkit/``). Official split: 8,144 train / 8,041
      test images; classes 1..196 become labels 0..195; bounding boxes are not used.
    - the offline train-only copy: ``cars_train/NNNNN.jpg`` and
      ``train_perfect_preds.txt`` (class 1..196 of each image in file order),
      extracted or read in place from ``cars-train-128px.tar.gz``. It has no
      test images, so a fixed held-out slice stands in for the test split:
      in file-name order, every 10th image (00010.jpg, 00020.jpg, ...; index
      % 10 == 9) is 'test' (814 of 8,144) and the rest 'train' (7,330). Numbers
      on it are not comparable with the official test split.
    """
    _check_split(split)
    roots = _check_roots(roots, "Stanford Cars")
    for base in _bases(roots, CARS_DIRS):
        if (base / "devkit" / "cars_train_annos.mat").is_file() and (base / "cars_train").is_dir():
            return _cars_devkit(split, base, progress)
        if (base / "cars_train").is_dir() and (base / "train_perfect_preds.txt").is_file():
            return _cars_train_only(split, base, progress)
        archives = _archives(base, CARS_ARCHIVES)
        if archives:
            return _cars_train_only(split, archives[0], progress)
    ensure_files("Stanford Cars", roots[0] / "stanford-cars",
                 {"cars_train/": (None, None, None), "cars_test/": (None, None, None),
                  "devkit/cars_train_annos.mat": (None, None, None),
                  "cars_test_annos_withlabels.mat": (None, None, None)},
                 allow_download, progress=progress,
                 hint=f"get cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat "
                      f"from {CARS_PAGE} or a mirror (e.g. Kaggle) and extract the archives there; "
                      + _searched(roots, CARS_DIRS))
    raise DatasetError(f"Stanford Cars: no usable layout found; {_searched(roots, CARS_DIRS)}")


# =============================================================================================
# any folder of images
# =============================================================================================
def _folder_convert(im: Image.Image, height: int, width: int) -> np.ndarray:
    _draft(im, height, width)
    im = ImageOps.exif_transpose(im)
    im = _plain(im)  # 'L' for grayscale sources, else 'RGB'
    return np.asarray(_cover(im, height, width))


def load_image_folder(path: str | os.PathLike, size: int | tuple[int, int], *, strict: bool = False,
                      name: str = "folder", split: str = "train", progress: bool = True) -> ImageData:
    """Every image under ``path`` (recursively), resized to ``size`` (int or (height, width)).

    Files with the extensions in :data:`IMAGE_EXTENSIONS` (any case) are read;
    other files and hidden files/folders (names starting with '.') are ignored.
    Each image is EXIF-rotated, converted (see the module docstring: alpha onto
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
    order = sorted(range(len(files)), key=lambda i: (labels[i], _natural_key(rel[i].as_posix())))
    files, rel, labels = [files[i] for i in order], [rel[i] for i in order], [labels[i] for i in order]

    images, gray, errors = _decode([(r.as_posix(), f) for r, f in zip(rel, files)],
                                   partial(_folder_convert, height=height, width=width), height, width,
                                   f"{name} {split}", progress)
    if errors:
        if strict:
            _strict(errors, f"image folder {folder}")
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
    return _image_data(name, split, images, labels)


# =============================================================================================
# registry
# =============================================================================================
SOURCES: dict[str, Callable[..., ImageData]] = {
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "svhn": load_svhn,
    "celeba": load_celeba,
    "tinyimagenet": load_tiny_imagenet,
    "cars": load_stanford_cars,
}
