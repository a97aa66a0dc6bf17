"""Decode once: a memory-mapped cache of decoded, resized datasets.

Decoding JPEGs (CIFAR-10's JPEG copy, Tiny ImageNet, CelebA, Stanford Cars) repeats
the same work on every load; reading the decoded uint8 array back is one memory-mapped
read (timings: docs/data.md).
:func:`load_dataset <agelab.data.load_dataset>` therefore opens a
:func:`caching` context, and each source loader hands its decode step to
:func:`cached` together with the files it decodes from.

An entry is keyed by dataset, split, image size, a format version and a
fingerprint of the source files (sha256 of each file's bytes; for a folder, of
its listing: relative path, size and mtime of every file). A changed source
therefore never serves stale images. An entry is three files in
``<root>/agelab-cache/``::

    <dataset>-<split>-<size>px-<key>.npy         images (N, C, S, S) uint8, read memory-mapped
    <dataset>-<split>-<size>px-<key>.labels.npy  labels (N,) int64
    <dataset>-<split>-<size>px-<key>.json        what the entry holds (written last: the commit mark)

It is written into the first data root that accepts it (``--data-root``,
``$AGELAB_DATA``, then the per-user cache folder), each file to a temporary name
first and renamed. A root whose permission bits grant no write access (a read-only
dataset share) is skipped even when the process could write there (as root). An entry that fails to read is decoded again and replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from agelab.data import ImageData

CACHE_DIR = "agelab-cache"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class _Request:
    name: str
    split: str
    size: int
    roots: tuple[Path, ...]


_request: ContextVar[_Request | None] = ContextVar("agelab_cache_request", default=None)


@contextmanager
def caching(name: str, split: str, size: int, roots: Sequence[Path]) -> Iterator[None]:
    """Within this block, :func:`cached` serves and stores ``name``/``split`` at ``size``."""
    token = _request.set(_Request(name, split, size, tuple(Path(r) for r in roots)))
    try:
        yield
    finally:
        _request.reset(token)


def _hash_file(path: Path, h) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)


def fingerprint(sources: Sequence[Path]) -> str:
    """sha256 over the bytes of each source file, or the listing (path, size, mtime) of each source folder."""
    h = hashlib.sha256()
    for src in sources:
        src = Path(src)
        h.update(f"\0{src.name}\0".encode())
        if src.is_dir():
            for dirpath, dirnames, filenames in os.walk(src):
                dirnames.sort()
                for fn in sorted(filenames):
                    p = Path(dirpath, fn)
                    try:
                        st = p.stat()
                    except OSError:  # a dangling link or an unreadable entry: the loader skips or refuses it
                        st = p.lstat()
                    h.update(f"{p.relative_to(src).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            _hash_file(src, h)
    return h.hexdigest()


def _entry_stem(req: _Request, sources: Sequence[Path]) -> tuple[str, dict]:
    key_data = {"version": FORMAT_VERSION, "dataset": req.name, "split": req.split, "size": req.size,
                "sources": fingerprint(sources)}
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
    return f"{req.name}-{req.split}-{req.size}px-{key}", key_data


def _read_entry(folder: Path, stem: str, key_data: dict):
    """The cached (images, labels, notes) of this entry, memory-mapped, or None when absent or unusable.

    ``notes`` are the warnings that decoding it gave (e.g. skipped unreadable files)."""
    meta_path = folder / f"{stem}.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key_data:
            return None
        images = np.load(folder / f"{stem}.npy", mmap_mode="c")  # copy-on-write: writable, nothing written back
        labels = np.load(folder / f"{stem}.labels.npy")
        if (images.dtype != np.uint8 or list(images.shape) != meta["shape"]
                or labels.shape != (images.shape[0],)):
            return None
        return images, labels, [str(n) for n in meta.get("notes", [])]
    except (OSError, ValueError, KeyError, TypeError, EOFError):  # truncated, damaged, unreadable
        return None


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_entry(folder: Path, stem: str, key_data: dict, images: np.ndarray, labels: np.ndarray,
                 notes: Sequence[str] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _save(folder / f"{stem}.npy", images)
    _save(folder / f"{stem}.labels.npy", labels)
    meta = {"key": key_data, "shape": list(images.shape), "format": "numpy .npy, uint8 (N, C, H, W)",
            "notes": list(notes)}
    tmp = folder / f".{stem}.json.{secrets.token_hex(4)}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, folder / f"{stem}.json")  # last: the entry exists only once this name does


def cache_folders(roots: Sequence[Path]) -> list[Path]:
    return [Path(r) / CACHE_DIR for r in roots]


def _meant_read_only(folder: Path) -> bool:
    """A data root whose permission bits grant nobody write access (like a read-only dataset share).

    ``os.access`` says yes to root everywhere, so the mode bits are checked too: the cache never
    goes into a folder its owner marked read-only, even when the process could write there.
    """
    root = folder.parent
    try:
        return root.is_dir() and (root.stat().st_mode & 0o222 == 0 or not os.access(root, os.W_OK))
    except OSError:
        return True


def cached(sources: Sequence[Path], decode: Callable[[], "ImageData"]) -> "ImageData":  # noqa: F821
    """``decode()`` at the size of the current :func:`caching` request, served from the cache when possible.

    Outside a :func:`caching` block this is just ``decode()``.
    """
    from agelab.data import ImageData, fit_to_size

    req = _request.get()
    if req is None:
        return decode()
    stem, key_data = _entry_stem(req, sources)
    folders = cache_folders(req.roots)
    for folder in folders:
        hit = _read_entry(folder, stem, key_data)
        if hit is not None:
            images, labels, notes = hit
            for note in notes:  # what decoding said (skipped files) is said again for the cached copy
                warnings.warn(f"{note} (in the cached copy decoded earlier)", stacklevel=2)
            return ImageData(req.name, req.split, torch.from_numpy(images), torch.from_numpy(labels))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = decode()
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for w in caught:  # passed on as they came
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    data.images = fit_to_size(data.images, req.size).contiguous()
    images, labels = data.images.numpy(), data.labels.numpy().astype(np.int64)
    errors = []
    for folder in folders:
        if not folder.is_dir() and _meant_read_only(folder):
            errors.append(f"{folder.parent}: read-only")
            continue
        try:
            _write_entry(folder, stem, key_data, images, labels, notes)
            break
        except OSError as exc:  # read-only data root, full disk: try the next root
            errors.append(f"{folder}: {exc.strerror or exc}")
    else:
        warnings.warn(f"agelab: could not cache decoded {req.name} {req.split} ({'; '.join(errors)}); "
                      "it will be decoded again next time", stacklevel=2)
    return data


def cached_by_source(decode: Callable[..., "ImageData"]) -> Callable[..., "ImageData"]:
    """``decode(split, source, ...)`` served from the decoded-image cache, keyed by ``source``'s fingerprint."""
    @wraps(decode)
    def wrapper(split: str, source: Path, *args) -> "ImageData":
        return cached([source], lambda: decode(split, source, *args))
    return wrapper
