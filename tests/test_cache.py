"""The decoded-image cache: decode once, serve memory-mapped, never stale, never fatal."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agelab.data import cifar, load_dataset, mnist
from agelab.data.cache import CACHE_DIR, fingerprint

CLASSES = cifar.CIFAR10_CLASSES


def make_cifar_jpegs(root: Path, per_class: int = 2, seed: int = 0) -> Path:
    """A tiny CIFAR-10 JPEG layout (train/<class>/N.jpg, test/<class>/N.jpg) under root/cifar10."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar10"
    for split in ("train", "test"):
        for c in CLASSES:
            (folder / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / split / c / f"{i}.jpg")
    return folder


def entries(root: Path) -> list[str]:
    folder = root / CACHE_DIR
    return sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []


@pytest.fixture
def cifar_root(tmp_path):
    root = tmp_path / "data"
    make_cifar_jpegs(root)
    return root


def forbid_decoding(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("decoded although a cache entry exists")
    monkeypatch.setattr(cifar, "decode_images", boom)  # where the CIFAR-10 loader looks it up


def test_second_load_is_served_memory_mapped_without_decoding(cifar_root, monkeypatch):
    first = load_dataset("cifar10", "train", 32, str(cifar_root))
    assert len(first) == 20 and entries(cifar_root) and len(entries(cifar_root)) == 1
    forbid_decoding(monkeypatch)
    second = load_dataset("cifar10", "train", 32, str(cifar_root))
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.images.dtype == torch.uint8 and second.images.shape == (20, 3, 32, 32)
    # served from the .npy file, not a copy in memory
    npy = next((cifar_root / CACHE_DIR).glob("cifar10-train-32px-*[!s].npy"))
    mapped = np.load(npy, mmap_mode="r")
    assert np.array_equal(mapped, second.images.numpy())
    assert second.images.data_ptr() != first.images.data_ptr()


def test_entries_are_keyed_by_split_and_size(cifar_root, monkeypatch):
    a = load_dataset("cifar10", "train", 32, str(cifar_root))
    b = load_dataset("cifar10", "train", 64, str(cifar_root))
    c = load_dataset("cifar10", "test", 32, str(cifar_root))
    names = entries(cifar_root)
    assert len(names) == 3
    assert any(n.startswith("cifar10-train-32px-") for n in names)
    assert any(n.startswith("cifar10-train-64px-") for n in names)
    assert any(n.startswith("cifar10-test-32px-") for n in names)
    forbid_decoding(monkeypatch)
    assert load_dataset("cifar10", "train", 64, str(cifar_root)).images.shape == (20, 3, 64, 64)
    assert torch.equal(load_dataset("cifar10", "test", 32, str(cifar_root)).images, c.images)
    assert not torch.equal(a.images, c.images)
    assert b.images.shape[-1] == 64


def test_a_changed_source_is_decoded_again(cifar_root):
    before = load_dataset("cifar10", "train", 32, str(cifar_root))
    img = cifar_root / "cifar10" / "train" / CLASSES[0] / "0.jpg"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    os.utime(img, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    after = load_dataset("cifar10", "train", 32, str(cifar_root))
    assert len(entries(cifar_root)) == 2
    assert not torch.equal(before.images[0], after.images[0])
    assert int(after.images[0].max()) < 10  # the new, black image


def test_a_damaged_entry_is_rebuilt(cifar_root):
    good = load_dataset("cifar10", "train", 32, str(cifar_root))
    npy = next((cifar_root / CACHE_DIR).glob("cifar10-train-32px-*[!s].npy"))
    npy.write_bytes(npy.read_bytes()[:500])  # truncated
    again = load_dataset("cifar10", "train", 32, str(cifar_root))
    assert torch.equal(good.images, again.images)
    assert np.load(npy).shape == (20, 3, 32, 32)  # rewritten whole


def test_unwritable_root_falls_back_to_the_next_root(cifar_root, tmp_path, monkeypatch):
    (cifar_root / CACHE_DIR).write_text("a file where the cache folder would go")
    second = tmp_path / "second"
    monkeypatch.setenv("AGELAB_DATA", str(second))
    load_dataset("cifar10", "test", 32, str(cifar_root))
    assert len(entries(second)) == 1
    forbid_decoding(monkeypatch)
    assert len(load_dataset("cifar10", "test", 32, str(cifar_root))) == 20


def test_no_writable_root_warns_and_still_loads(cifar_root, monkeypatch, tmp_path):
    xdg = Path(os.environ["XDG_CACHE_HOME"])
    (cifar_root / CACHE_DIR).write_text("x")
    (xdg / "agelab").mkdir(parents=True, exist_ok=True)
    (xdg / "agelab" / CACHE_DIR).write_text("x")
    with pytest.warns(UserWarning, match="could not cache"):
        data = load_dataset("cifar10", "test", 32, str(cifar_root))
    assert len(data) == 20


def test_cache_off_writes_nothing(cifar_root):
    load_dataset("cifar10", "train", 32, str(cifar_root), cache=False)
    assert not (cifar_root / CACHE_DIR).exists()


def test_idx_datasets_are_cached_too(fake_mnist, monkeypatch):
    root, arrays = fake_mnist
    first = load_dataset("mnist", "train", 32, str(root))
    assert len(entries(root)) == 1
    monkeypatch.setattr(mnist, "_idx_from", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    second = load_dataset("mnist", "train", 32, str(root))
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


def test_fingerprint_follows_content_and_listing(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"123")
    one = fingerprint([f])
    f.write_bytes(b"124")
    assert fingerprint([f]) != one
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_bytes(b"1")
    listing = fingerprint([d])
    (d / "y").write_bytes(b"2")
    assert fingerprint([d]) != listing


def test_training_reads_from_the_cache(fake_mnist, tiny_cfg, tmp_path):
    from agelab.trainer import train

    root, _ = fake_mnist
    cfg = tiny_cfg(dataset="mnist", data_root=str(root), iterations=2, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's warning about non-writable numpy arrays
        train(cfg, progress=False)
    assert len(entries(root)) == 2  # train and test


def test_a_root_marked_read_only_is_never_written_even_by_root(cifar_root, tmp_path, monkeypatch):
    second = tmp_path / "second"
    monkeypatch.setenv("AGELAB_DATA", str(second))
    cifar_root.chmod(0o555)  # r-x for everyone: root could still write here, agelab must not
    try:
        load_dataset("cifar10", "test", 32, str(cifar_root))
    finally:
        cifar_root.chmod(0o755)
    assert not (cifar_root / CACHE_DIR).exists()
    assert len(entries(second)) == 1
