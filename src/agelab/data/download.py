"""Fetching dataset files: streamed, checksummed, atomic.

:func:`download` streams one URL into a temporary file next to the destination
(``.<name>.<random>.part``), hashing while it writes, and moves it into place
with :func:`os.replace` only once the size and checksum are right. Whatever goes
wrong (HTTP error, connection cut mid-transfer, checksum mismatch, Ctrl-C) the
partial file is deleted and a one-line :class:`~agelab.data.DatasetError` names
the URL and the reason, so a later run never mistakes half a file for a dataset.

:func:`ensure_files` is what the dataset sources call: it returns the paths of
files that are present and downloads the missing ones when that is allowed and
possible; otherwise it raises a DatasetError that says exactly which files to
place in which folder (CelebA and Stanford Cars have no direct download link).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from agelab.data import DatasetError
from agelab.errors import one_line

CHUNK = 1 << 20  # bytes per read
TIMEOUT = 60.0  # seconds without data before a download fails
USER_AGENT = "agelab-dataset-download/0.1 (+python-urllib)"

# ``url`` entries of ensure_files: one URL, several mirrors tried in order, or None (no direct link).
Url = str | Sequence[str] | None


def file_digests(path: Path, sha256: bool = True, md5: bool = True) -> dict[str, str]:
    """Hex digests of a file, read in chunks."""
    hashers = {}
    if sha256:
        hashers["sha256"] = hashlib.sha256()
    if md5:
        hashers["md5"] = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {k: h.hexdigest() for k, h in hashers.items()}


def _mismatch(digests: Mapping[str, str], sha256: str | None, md5: str | None) -> str | None:
    """None when every given checksum matches, else the reason."""
    for kind, want in (("sha256", sha256), ("md5", md5)):
        if want is not None and digests[kind] != want.lower():
            return f"{kind} checksum mismatch (got {digests[kind]}, expected {want.lower()})"
    return None


def verify_file(path: Path, sha256: str | None = None, md5: str | None = None) -> str | None:
    """None when ``path`` matches the given checksums (none given: it exists), else the reason."""
    if sha256 is None and md5 is None:
        return None
    return _mismatch(file_digests(path, sha256 is not None, md5 is not None), sha256, md5)


def _urlopen(url: str):
    """Open ``url`` for reading (a seam for tests)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(request, timeout=TIMEOUT)


def _stream(url: str, out, label: str, progress: bool, sha256: str | None, md5: str | None) -> None:
    hashers = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}
    with _urlopen(url) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False,
                  disable=None if progress else True) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        # urllib returns a short body without an error when the server closes early
        raise DatasetError(f"cannot download {url}: connection closed after {received} of {total} bytes")
    reason = _mismatch({k: h.hexdigest() for k, h in hashers.items()}, sha256, md5)
    if reason:
        raise DatasetError(f"cannot download {url}: {reason}; the downloaded file was discarded")


def download(url: str, dest: Path, sha256: str | None = None, md5: str | None = None,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    If ``dest`` already exists and matches the given checksums (or no checksum is
    given), it is returned without any network access. A file that exists but
    does not verify is downloaded again (the old one is replaced only by a copy
    that verifies). The transfer goes to a temporary file in ``dest``'s folder,
    is checked against Content-Length, ``sha256`` and ``md5``, then renamed into
    place. On any failure, KeyboardInterrupt included, the temporary file is
    removed and a one-line :class:`DatasetError` naming the URL is raised.
    """
    dest = Path(dest)
    if dest.is_file():
        try:
            if verify_file(dest, sha256, md5) is None:
                return dest
        except OSError:
            pass  # unreadable: download again
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot download {url}: cannot create {dest.parent}: {one_line(exc)}") from None
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"
    try:
        with open(tmp, "xb") as out:
            _stream(url, out, dest.name, progress, sha256, md5)
        os.replace(tmp, dest)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, DatasetError):
            raise
        if isinstance(exc, KeyboardInterrupt):
            raise DatasetError(f"download of {url} interrupted; the partial file was removed") from None
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        elif isinstance(exc, urllib.error.URLError):
            reason = one_line(exc.reason)
        elif isinstance(exc, (OSError, http.client.HTTPException, ValueError)):
            reason = f"{type(exc).__name__}: {one_line(exc) or 'no details'}"
        else:
            raise
        raise DatasetError(f"cannot download {url}: {reason}") from None
    return dest


def _urls(url: Url) -> list[str]:
    if url is None:
        return []
    return [url] if isinstance(url, str) else list(url)


def ensure_files(name: str, folder: Path, files: Mapping[str, tuple[Url, str | None, str | None]],
                 allow_download: bool, *, progress: bool = True, hint: str = "") -> dict[str, Path]:
    """Make sure every file of ``files`` is in ``folder``; return {filename: path}.

    ``files`` maps a file name to ``(url, sha256, md5)``; ``url`` is one URL, a
    sequence of mirrors tried in order, or None when there is no direct link. A
    name ending in "/" stands for a folder (e.g. an extracted archive) and
    must have url None. Files already present are used as they are (not re-hashed). Missing files
    are downloaded with :func:`download` when ``allow_download`` is true and all
    of them have a URL; otherwise a one-line DatasetError lists the missing
    files, the folder to place them in and where to get them (``hint`` is
    appended, e.g. the dataset's home page or the folders that were searched).
    """
    folder = Path(folder)
    paths = {f: folder / f for f in files}
    missing = [f for f in files if not (paths[f].is_dir() if f.endswith("/") else paths[f].is_file())]
    if not missing:
        return paths
    no_link = [f for f in missing if not _urls(files[f][0])]
    if not allow_download or no_link:
        listing = ", ".join(missing)
        where = f"place {'it' if len(missing) == 1 else 'them'} in {folder}"
        if no_link:
            how = f"{', '.join(no_link)} cannot be downloaded automatically (no direct link)"
        else:
            sources = "; ".join(f"{f} from {_urls(files[f][0])[0]}" for f in missing)
            how = f"official source: {sources}; or allow downloading (allow_download=True)"
        tail = f"; {hint}" if hint else ""
        raise DatasetError(f"{name}: missing {listing}: {where} ({how}){tail}")
    for f in missing:
        url, sha256, md5 = files[f]
        errors = []
        for u in _urls(url):
            try:
                download(u, paths[f], sha256, md5, progress)
                break
            except DatasetError as exc:
                errors.append(str(exc))
        else:
            raise DatasetError(errors[-1] + (f" (and {len(errors) - 1} other mirror(s) failed)" if len(errors) > 1 else ""))
    return paths
