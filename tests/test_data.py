"""Datasets: embedded digits, MNIST IDX files, size fitting and pixel conversions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agelab.data import DatasetError, fit_to_size, load_dataset, to_float, to_uint8
from agelab.data.digits import load_digits_split
from conftest import idx_bytes, write_idx_gz


# ---------------------------------------------------------------------------
# digits
# ---------------------------------------------------------------------------
def test_digits_splits_are_disjoint_and_cover_the_dataset():
    from sklearn.datasets import load_digits

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    # every 6th image (index % 6 == 5) is held out: 299 test images, 1,498 train images
    assert (len(train), len(test)) == (1498, 299) and len(train) + len(test) == 1797
    for d in (train, test):
        assert d.images.dtype == torch.uint8 and d.images.shape[1:] == (1, 32, 32)
        assert d.labels.dtype == torch.int64 and d.labels.shape == (len(d),)
        assert set(d.labels.tolist()) == set(range(10))
        assert d.channels == 1 and d.images.max() > 200  # 0..16 rescaled to 0..255

    # at the native 8x8 size the two splits are exactly a partition of the original index set
    bunch = load_digits()
    full = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)).reshape(1797, 64)
    tr, te = load_digits_split("train"), load_digits_split("test")
    rows = {tuple(r) for r in full.tolist()}
    key = {}
    for i, r in enumerate(full.tolist()):
        key.setdefault(tuple(r), []).append(i)
    used: set[int] = set()
    for split in (tr, te):
        for img, label in zip(split.images.reshape(len(split), 64).tolist(), split.labels.tolist()):
            assert tuple(img) in rows
            i = next(j for j in key[tuple(img)] if j not in used and bunch.target[j] == label)
            used.add(i)  # each original image is matched at most once across both splits
    assert used == set(range(1797))


def test_digits_order_is_fixed_and_every_sixth_image_is_test():
    te = load_digits_split("test")
    from sklearn.datasets import load_digits

    target = load_digits().target
    assert te.labels.tolist() == target[5::6].tolist()


def test_digits_at_64_pixels():
    d = load_dataset("digits", "test", image_size=64)
    assert d.images.shape == (299, 1, 64, 64) and d.images.dtype == torch.uint8


def test_unknown_dataset_and_split():
    with pytest.raises(DatasetError):
        load_dataset("cifar", "train")
    with pytest.raises(ValueError):
        load_dataset("digits", "valid")


# ---------------------------------------------------------------------------
# MNIST IDX files
# ---------------------------------------------------------------------------
def test_fake_mnist_loads_with_padding_to_32(fake_mnist):
    root, arrays = fake_mnist
    for split, n in (("train", 24), ("test", 8)):
        data = load_dataset("mnist", split, image_size=32, data_root=str(root))
        images, labels = arrays[split]
        assert data.name == "mnist" and data.split == split
        assert data.images.shape == (n, 1, 32, 32) and data.images.dtype == torch.uint8
        assert data.labels.dtype == torch.int64 and data.labels.tolist() == labels.tolist()
        # 28 -> 32 by zero padding of 2 pixels on every side: the digits are not resampled
        assert torch.equal(data.images[:, 0, 2:30, 2:30], torch.from_numpy(images))
        border = data.images.clone()
        border[:, :, 2:30, 2:30] = 0
        assert border.sum() == 0


def test_fake_mnist_resized_to_64(fake_mnist):
    root, _ = fake_mnist
    data = load_dataset("mnist", "train", image_size=64, data_root=str(root))
    assert data.images.shape == (24, 1, 64, 64) and data.images.dtype == torch.uint8


def test_mnist_found_in_subfolder_and_via_environment(fake_mnist, tmp_path, monkeypatch):
    root, _ = fake_mnist
    parent = tmp_path / "datasets"
    parent.mkdir()
    root.rename(parent / "mnist")
    assert len(load_dataset("mnist", "test", data_root=str(parent))) == 8
    monkeypatch.setenv("AGELAB_DATA", str(parent))
    assert len(load_dataset("mnist", "test")) == 8


def test_missing_mnist_names_files_and_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz") as info:
        load_dataset("mnist", "train", data_root=str(empty))
    assert str(empty) in str(info.value)


def _corrupt_train_images(root, data: bytes):
    (root / "train-images-idx3-ubyte.gz").unlink()
    write_idx_gz(root / "train-images-idx3-ubyte.gz", data)


def test_truncated_idx_body_gives_dataset_error(fake_mnist):
    root, arrays = fake_mnist
    _corrupt_train_images(root, idx_bytes(arrays["train"][0])[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("mnist", "train", data_root=str(root))


def test_truncated_gzip_stream_gives_dataset_error(fake_mnist):
    root, _ = fake_mnist
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DatasetError):
        load_dataset("mnist", "train", data_root=str(root))


def test_truncated_idx_header_gives_dataset_error(fake_mnist):
    root, arrays = fake_mnist
    _corrupt_train_images(root, idx_bytes(arrays["train"][0])[:10])  # magic + 1.5 of 3 dims
    with pytest.raises(DatasetError):
        load_dataset("mnist", "train", data_root=str(root))


def test_wrong_magic_and_mismatched_labels_give_dataset_error(fake_mnist):
    root, arrays = fake_mnist
    images, labels = arrays["train"]
    _corrupt_train_images(root, b"\x00\x00\x0d\x03" + idx_bytes(images)[4:])  # float32 type code
    with pytest.raises(DatasetError, match="unsigned-byte"):
        load_dataset("mnist", "train", data_root=str(root))
    _corrupt_train_images(root, idx_bytes(images))
    (root / "train-labels-idx1-ubyte.gz").unlink()
    write_idx_gz(root / "train-labels-idx1-ubyte.gz", labels[:-1])
    with pytest.raises(DatasetError, match="unexpected shapes"):
        load_dataset("mnist", "train", data_root=str(root))


def test_not_gzip_gives_dataset_error(fake_mnist):
    root, arrays = fake_mnist
    (root / "train-images-idx3-ubyte.gz").write_bytes(idx_bytes(arrays["train"][0]))  # raw bytes, .gz name
    with pytest.raises(DatasetError):
        load_dataset("mnist", "train", data_root=str(root))


# ---------------------------------------------------------------------------
# sizes and pixel conversions
# ---------------------------------------------------------------------------
def test_fit_to_size():
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    assert fit_to_size(x, 32) is x
    up = fit_to_size(torch.full((1, 3, 8, 8), 200, dtype=torch.uint8), 32)
    assert up.shape == (1, 3, 32, 32) and up.dtype == torch.uint8 and (up == 200).all()
    down = fit_to_size(torch.full((1, 1, 64, 64), 17, dtype=torch.uint8), 32)
    assert down.shape == (1, 1, 32, 32) and (down == 17).all()


def test_to_float_to_uint8_roundtrip():
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    f = to_float(u8)
    assert f.dtype == torch.float32
    assert f.min().item() == -1.0 and f.max().item() == 1.0
    assert torch.equal(to_uint8(f), u8)
    assert u8.dtype == torch.uint8 and u8.flatten()[-1] == 255  # input untouched


def test_to_uint8_clamps_and_detaches():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0], requires_grad=True)
    out = to_uint8(x)
    assert out.dtype == torch.uint8 and out.tolist() == [0, 0, 128, 255, 255]


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="../shared/data/mnist not present")
def test_real_mnist_loads_with_official_counts():
    train = load_dataset("mnist", "train", 32, str(SHARED_DATA))
    test = load_dataset("mnist", "test", 32, str(SHARED_DATA))
    assert train.images.shape == (60000, 1, 32, 32) and test.images.shape == (10000, 1, 32, 32)
    assert torch.bincount(train.labels, minlength=10).min() > 5000
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
