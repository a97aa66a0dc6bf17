"""Where a loader finds its files: split and root checks, the candidate folders of each root,
the "searched ..." hint of a not-found error, and the natural order of file names."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from agelab.data import DatasetError

SPLITS = ("train", "test")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def check_roots(roots: Sequence[Path], name: str) -> list[Path]:
    roots = [Path(r).expanduser() for r in roots]
    if not roots:
        raise DatasetError(f"{name}: no data folder to search; pass --data-root or set AGELAB_DATA")
    return roots


def bases(roots: Sequence[Path], subdirs: Sequence[str]) -> list[Path]:
    """Existing folders root/<subdir> ("" = the root itself), root by root, without repeats."""
    out: list[Path] = []
    for root in roots:
        for sub in subdirs:
            p = root / sub if sub else root
            if p not in out and p.is_dir():
                out.append(p)
    return out


def searched(roots: Sequence[Path], subdirs: Sequence[str]) -> str:
    shown = ", ".join(str(r) for r in roots)
    subs = ", ".join(f"{s}/" for s in subdirs if s)
    return f"searched {shown}" + (f" and their subfolders {subs}" if subs else "")


def natural_key(text: str) -> list:
    """Sort key that orders digit runs by value: img2 before img10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
