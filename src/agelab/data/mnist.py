"""The IDX file format of MNIST and Fashion-MNIST (the loaders are in :mod:`agelab.data.sources`)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or raw) of unsigned bytes into an array of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (too short)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file ({body.size} of {int(np.prod(shape))} values)")
    return body.reshape(shape)
