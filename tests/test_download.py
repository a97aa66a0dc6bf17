"""agelab.data.download against a local HTTP server (http.server on 127.0.0.1, in a thread)."""

from __future__ import annotations

import hashlib
import tarfile
import threading
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from agelab.data import DatasetError
from agelab.data import download as dl
from agelab.data import sources
from agelab.data.download import download, ensure_files
from conftest import fake_mnist_arrays, write_idx_gz


class _Handler(SimpleHTTPRequestHandler):
    """Serves ``directory``; /cut/<n> promises more bytes than it sends, then hangs up."""

    counts: Counter

    def do_GET(self):
        self.counts[self.path] += 1
        if self.path.startswith("/cut/"):
            body = b"x" * int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body) * 10))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(base_url, served_folder, request_counts)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    counts: Counter = Counter()
    handler = type("Handler", (_Handler,), {"counts": counts})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served, counts
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def archive(server):
    """A small .tar.gz fixture archive being served, with its sha256 and md5."""
    base, served, _ = server
    src = served.parent / "archive-src"
    src.mkdir()
    (src / "a.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    (src / "b.txt").write_text("hello\n")
    path = served / "data.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        tf.add(src, arcname="data")
    data = path.read_bytes()
    return f"{base}/data.tar.gz", data, hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_download_is_verified_and_atomic(archive, tmp_path, server):
    url, data, sha, md5 = archive
    dest = tmp_path / "dl" / "sub" / "data.tar.gz"
    assert download(url, dest, sha256=sha, md5=md5, progress=False) == dest
    assert dest.read_bytes() == data and leftovers(dest.parent) == ["data.tar.gz"]
    with tarfile.open(dest) as tf:
        assert "data/b.txt" in tf.getnames()
    assert server[2]["/data.tar.gz"] == 1


def test_checksum_mismatch_leaves_nothing(archive, tmp_path):
    url, _, sha, md5 = archive
    dest = tmp_path / "dl" / "data.tar.gz"
    with pytest.raises(DatasetError) as err:
        download(url, dest, sha256="0" * 64, progress=False)
    msg = str(err.value)
    assert url in msg and "sha256 checksum mismatch" in msg and sha in msg and "\n" not in msg
    assert leftovers(dest.parent) == []
    with pytest.raises(DatasetError, match="md5 checksum mismatch"):
        download(url, dest, sha256=sha, md5="f" * 32, progress=False)
    assert leftovers(dest.parent) == []


def test_corrupted_served_file_is_rejected(archive, server, tmp_path):
    url, data, sha, _ = archive
    served = server[1] / "data.tar.gz"
    corrupted = bytearray(data)
    corrupted[len(corrupted) // 2] ^= 0xFF
    served.write_bytes(bytes(corrupted))
    dest = tmp_path / "dl" / "data.tar.gz"
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download(url, dest, sha256=sha, progress=False)
    assert leftovers(dest.parent) == []


def test_connection_cut_mid_transfer_leaves_nothing(server, tmp_path):
    base, _, counts = server
    dest = tmp_path / "dl" / "big.bin"
    with pytest.raises(DatasetError) as err:
        download(f"{base}/cut/5000", dest, progress=False)  # no checksum: the length check alone catches it
    msg = str(err.value)
    assert f"{base}/cut/5000" in msg and "5000 of 50000 bytes" in msg
    assert leftovers(dest.parent) == [] and counts["/cut/5000"] == 1


def test_http_404(server, tmp_path):
    base, _, _ = server
    dest = tmp_path / "dl" / "missing.bin"
    with pytest.raises(DatasetError, match=r"missing\.bin: HTTP 404"):
        download(f"{base}/missing.bin", dest, progress=False)
    assert leftovers(dest.parent) == []


def test_refused_connection(tmp_path):
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatasetError, match=f"cannot download http://127.0.0.1:{port}/x"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", progress=False)
    assert leftovers(tmp_path) == []


def test_no_second_download_when_the_file_verifies(archive, server, tmp_path):
    url, data, sha, md5 = archive
    counts = server[2]
    dest = tmp_path / "dl" / "data.tar.gz"
    download(url, dest, sha256=sha, progress=False)
    download(url, dest, sha256=sha, progress=False)
    download(url, dest, md5=md5, progress=False)
    assert counts["/data.tar.gz"] == 1
    # a damaged local copy is fetched again and replaced
    damaged = bytearray(dest.read_bytes())
    damaged[100] ^= 0xFF
    dest.write_bytes(bytes(damaged))
    download(url, dest, sha256=sha, progress=False)
    assert counts["/data.tar.gz"] == 2 and dest.read_bytes() == data


def test_keyboard_interrupt_removes_the_partial_file(archive, tmp_path, monkeypatch):
    url, _, sha, _ = archive
    real = dl._urlopen

    class Interrupting:
        def __init__(self, response):
            self.response, self.reads = response, 0
            self.headers = response.headers

        def read(self, n):
            self.reads += 1
            if self.reads == 2:
                raise KeyboardInterrupt
            return self.response.read(min(n, 1000))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.response.close()

    monkeypatch.setattr(dl, "_urlopen", lambda u: Interrupting(real(u)))
    dest = tmp_path / "dl" / "data.tar.gz"
    with pytest.raises(DatasetError, match="interrupted"):
        download(url, dest, sha256=sha, progress=False)
    assert leftovers(dest.parent) == []


def test_ensure_files_without_download_says_what_to_place_where(archive, server, tmp_path):
    url, _, sha, _ = archive
    counts = server[2]
    folder = tmp_path / "data" / "thing"
    files = {"data.tar.gz": (url, sha, None), "other.bin": (url + "?other", None, None)}
    with pytest.raises(DatasetError) as err:
        ensure_files("Thing", folder, files, allow_download=False)
    msg = str(err.value)
    assert msg.startswith("Thing: missing data.tar.gz, other.bin: place them in " + str(folder))
    assert url in msg and "allow_download" in msg and "\n" not in msg
    assert sum(counts.values()) == 0 and not folder.exists()
    # with downloading allowed both arrive; present files are not fetched again
    paths = ensure_files("Thing", folder, {"data.tar.gz": (url, sha, None)}, allow_download=True, progress=False)
    assert paths["data.tar.gz"].is_file() and counts["/data.tar.gz"] == 1
    ensure_files("Thing", folder, {"data.tar.gz": (url, sha, None)}, allow_download=True, progress=False)
    assert counts["/data.tar.gz"] == 1


def test_ensure_files_without_a_link(tmp_path):
    folder = tmp_path / "celeba"
    with pytest.raises(DatasetError) as err:
        ensure_files("CelebA", folder, {"img_align_celeba.zip": (None, None, None), "cars_train/": (None, None, None)},
                     allow_download=True, hint="get them from https://example.org/celeba")
    msg = str(err.value)
    assert f"place them in {folder}" in msg and "img_align_celeba.zip, cars_train/" in msg
    assert "no direct link" in msg and msg.endswith("get them from https://example.org/celeba")


def test_ensure_files_tries_mirrors_in_order(archive, server, tmp_path):
    url, data, sha, _ = archive
    base, _, counts = server
    paths = ensure_files("Thing", tmp_path, {"data.tar.gz": ([f"{base}/gone/data.tar.gz", url], sha, None)},
                         allow_download=True, progress=False)
    assert paths["data.tar.gz"].read_bytes() == data
    assert counts["/gone/data.tar.gz"] == 1 and counts["/data.tar.gz"] == 1
    with pytest.raises(DatasetError, match=r"404.*and 1 other mirror"):
        ensure_files("Thing", tmp_path / "x", {"f": ([f"{base}/gone/1", f"{base}/gone/2"], None, None)},
                     allow_download=True, progress=False)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_dataset_download_end_to_end(name, server, tmp_path, monkeypatch):
    """MNIST and Fashion-MNIST with allow_download=True fetch, verify (md5) and read the official file names."""
    base, served, counts = server
    md5s = {}
    for split, names in sources.IDX_FILES.items():
        images, labels = fake_mnist_arrays(6 if split == "train" else 3, 5)
        for fname, arr in zip(names, (images, labels)):
            md5s[fname] = hashlib.md5(write_idx_gz(served / "files" / fname, arr).read_bytes()).hexdigest()
    spec = dict(sources.IDX_DATASETS[name], mirrors=(f"{base}/down/", f"{base}/files/"), md5=md5s)
    monkeypatch.setitem(sources.IDX_DATASETS, name, spec)
    loader = sources.SOURCES[name]
    root = tmp_path / "root"
    folder = root / spec["dirs"][0]
    with pytest.raises(DatasetError, match=f"place them in {folder}"):
        loader("test", [root])
    d = loader("test", [root, tmp_path / "second"], allow_download=True, progress=False)
    assert d.name == name and d.images.shape == (3, 1, 28, 28) and d.labels.dtype == torch.int64
    assert sorted(p.name for p in folder.iterdir()) == sorted(sources.IDX_FILES["test"])
    assert counts["/files/t10k-images-idx3-ubyte.gz"] == 1 and counts["/down/t10k-images-idx3-ubyte.gz"] == 1
    loader("test", [root], allow_download=True)  # now local: no new request
    assert counts["/files/t10k-images-idx3-ubyte.gz"] == 1
