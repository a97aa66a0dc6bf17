"""File trees: a folder, a .zip or a .tar(.gz) read in place, by relative POSIX path.

:func:`open_tree` opens any of them as a :class:`Tree`; loaders list ``tree.names`` and hand
``tree.source(name)`` to the decoder. Zip members are read under a lock (decoding runs in
threads); a tar is read once, sequentially, keeping the members a loader asked for.
"""

from __future__ import annotations

import os
import tarfile
import threading
import zipfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from agelab.data import DatasetError
from agelab.errors import one_line


class Tree:
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


class _FolderTree(Tree):
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


class _ZipTree(Tree):
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


class _TarTree(Tree):
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


def open_tree(path: Path, keep: Callable[[str], bool] = lambda name: True) -> Tree:
    """A folder, a .zip or a tar archive (any compression tarfile reads) as a :class:`Tree`."""
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


def find_archives(folder: Path, patterns: Sequence[str]) -> list[Path]:
    """The files in ``folder`` matching any of the glob ``patterns``: pattern by pattern, sorted, without repeats."""
    out: list[Path] = []
    for pattern in patterns:
        out.extend(p for p in sorted(folder.glob(pattern)) if p.is_file() and p not in out)
    return out
