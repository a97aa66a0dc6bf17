"""Dataset sources (agelab.data.sources) on tiny fixtures written into tmp_path.

Each dataset's official layout (and the offline copies' layouts from
shared/data/README.md) is imitated with a handful of small images, so the fast
tests run in seconds. The ``slow`` tests at the end read the real offline
copies in /work/shared/data (or $AGELAB_SHARED_DATA) when they exist.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agelab.data import DatasetError
from agelab.data import sources
from agelab.data.images import cover_rgb
from agelab.data.sources import (
    CIFAR10_CLASSES,
    SOURCES,
    load_celeba,
    load_cifar10,
    load_fashion_mnist,
    load_image_folder,
    load_stanford_cars,
    load_svhn,
    load_tiny_imagenet,
)
from conftest import fake_mnist_arrays, write_idx_gz

SHARED = Path(os.environ.get("AGELAB_SHARED_DATA", "/work/shared/data"))


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def save_image(path: Path, array_or_image, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(np.asarray(array_or_image))
    im.save(path, fmt, **kw)
    return path


def solid(h: int, w: int, color) -> np.ndarray:
    return np.broadcast_to(np.asarray(color, np.uint8), (h, w, len(color))).copy()


def make_tar(archive: Path, folder: Path, arcname: str | None = None) -> Path:
    """tar.gz of ``folder``'s content (under ``arcname/`` when given)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tf:
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            tf.add(p, arcname=f"{arcname}/{rel}" if arcname else rel, recursive=False)
    return archive


def make_zip(archive: Path, folder: Path, arcname: str) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{arcname}/{p.relative_to(folder).as_posix()}")
    return archive


def close(a: torch.Tensor, color, tol: float = 6.0) -> bool:
    """Every pixel of (C, H, W) ``a`` within ``tol`` of ``color`` (JPEG is lossy)."""
    ref = torch.tensor(color, dtype=torch.float32).view(-1, 1, 1)
    return bool((a.float() - ref).abs().max() <= tol)


def test_registry_names_the_seven_datasets():
    assert set(SOURCES) == {"mnist", "fashion-mnist", "cifar10", "svhn", "celeba", "tinyimagenet", "cars"}
    assert SOURCES["tinyimagenet"] is load_tiny_imagenet and SOURCES["cars"] is load_stanford_cars


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_says_what_to_place_where_when_nothing_is_found(tmp_path, name):
    root = tmp_path / "empty-root"
    root.mkdir()
    with pytest.raises(DatasetError) as err:
        SOURCES[name]("train", [root, tmp_path / "other"])
    msg = str(err.value)
    assert "\n" not in msg and "missing" in msg and str(root) in msg and "place" in msg
    with pytest.raises(ValueError):
        SOURCES[name]("valid", [root])


# ---------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------
def write_fashion(folder: Path, gz: bool = True) -> dict:
    arrays = {"train": fake_mnist_arrays(12, 3), "test": fake_mnist_arrays(5, 4)}
    for split, (img, lab) in arrays.items():
        names = sources.IDX_FILES[split]
        for name, arr in zip(names, (img, lab)):
            path = write_idx_gz(folder / name, arr)
            if not gz:
                import gzip

                (folder / name[:-3]).write_bytes(gzip.decompress(path.read_bytes()))
                path.unlink()
    return arrays


@pytest.mark.parametrize("sub,gz", [("fashion-mnist", True), ("FashionMNIST/raw", False)])
def test_fashion_mnist_from_subfolder(tmp_path, sub, gz):
    arrays = write_fashion(tmp_path / sub, gz)
    for split in ("train", "test"):
        d = load_fashion_mnist(split, [tmp_path / "nowhere", tmp_path])
        img, lab = arrays[split]
        assert d.name == "fashion-mnist" and d.split == split
        assert d.images.dtype == torch.uint8 and d.images.shape == (len(img), 1, 28, 28)
        assert torch.equal(d.images[:, 0], torch.from_numpy(img))
        assert d.labels.dtype == torch.int64 and d.labels.tolist() == lab.tolist()


def test_fashion_mnist_never_takes_mnist_files_from_the_root_itself(tmp_path):
    write_fashion(tmp_path)  # same file names as MNIST, directly in the root
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz") as err:
        load_fashion_mnist("train", [tmp_path])
    assert str(tmp_path / "fashion-mnist") in str(err.value) and "fashion-mnist.s3" in str(err.value)


def test_fashion_mnist_truncated_file_is_a_dataset_error(tmp_path):
    write_fashion(tmp_path / "fashion-mnist")
    path = tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetError, match="cannot read Fashion-MNIST"):
        load_fashion_mnist("test", [tmp_path])


# ---------------------------------------------------------------------------
# CIFAR-10: python batches
# ---------------------------------------------------------------------------
def cifar_batch_dict(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [int(x) for x in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
    }


def py2_style_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle (protocol 2) wrote the official files: str keys, GLOBAL numpy.core...."""

    def string(s: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING (a Python 2 str)
        return b"U" + bytes([len(s)]) + s if len(s) < 256 else b"T" + struct.pack("<I", len(s)) + s

    def int_(i: int) -> bytes:
        return b"K" + bytes([i]) if i < 256 else b"M" + struct.pack("<H", i)

    n = data.shape[0]
    out = b"\x80\x02}(" + string(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
    out += b"(K\x01" + int_(n) + int_(3072) + b"\x86"
    out += b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R"
    out += b"(K\x03" + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89" + string(data.tobytes()) + b"tb"
    out += string(b"labels") + b"](" + b"".join(int_(x) for x in labels) + b"eu."
    return out


def write_cifar_batches(root: Path, per_batch: int, n_test: int) -> tuple[Path, dict]:
    """root/cifar10/cifar-10-batches-py/ with 5 pickled train batches of ``per_batch`` images and a test batch."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": cifar_batch_dict(per_batch, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch_dict(n_test, 9)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}))
    return folder, batches


@pytest.fixture
def cifar_batches(tmp_path):
    """cifar10/cifar-10-batches-py/ with 5 train batches of 2 images and a test batch of 3."""
    return write_cifar_batches(tmp_path / "root", 2, 3)


def expected_cifar(batches: dict, split: str):
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    data = np.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
    labels = sum((batches[n][b"labels"] for n in names), [])
    return data, labels


def test_cifar10_official_batches_folder(cifar_batches):
    folder, batches = cifar_batches
    root = folder.parent.parent
    for split, n in (("train", 10), ("test", 3)):
        d = load_cifar10(split, [root])
        data, labels = expected_cifar(batches, split)
        assert d.images.shape == (n, 3, 32, 32) and d.images.dtype == torch.uint8
        assert torch.equal(d.images, torch.from_numpy(data)) and d.labels.tolist() == labels


def test_cifar10_official_archive_read_in_place(cifar_batches, tmp_path):
    folder, batches = cifar_batches
    root = tmp_path / "root2"
    make_tar(root / "cifar-10-python.tar.gz", folder, "cifar-10-batches-py")
    d = load_cifar10("train", [root])
    data, labels = expected_cifar(batches, "train")
    assert torch.equal(d.images, torch.from_numpy(data)) and d.labels.tolist() == labels
    assert not (root / "cifar-10-batches-py").exists()  # nothing extracted


@pytest.mark.parametrize("style", ["py2-cpickle", "protocol-2", "protocol-5"])
def test_cifar10_pickle_flavours(cifar_batches, style):
    folder, batches = cifar_batches
    for name, batch in batches.items():
        if style == "py2-cpickle":
            payload = py2_style_batch(batch[b"data"], batch[b"labels"])
        else:
            payload = pickle.dumps(batch, protocol=2 if style == "protocol-2" else 5)
        (folder / name).write_bytes(payload)
    d = load_cifar10("test", [folder.parent.parent])
    data, labels = expected_cifar(batches, "test")
    assert torch.equal(d.images, torch.from_numpy(data)) and d.labels.tolist() == labels


class _SystemPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _ExecPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _numpy_runstring_payload(marker: Path) -> bytes:
    """A global inside numpy that is not array reconstruction (it exec()s its argument)."""
    code = f"open({str(marker)!r}, 'w').close()".encode()
    return (b"\x80\x02}(U\x04data" + b"cnumpy.testing._private.utils\nrunstring\n"
            + b"X" + struct.pack("<I", len(code)) + code + b"}\x86R" + b"u.")


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "numpy-runstring"])
def test_cifar10_malicious_pickle_is_refused_and_runs_nothing(cifar_batches, tmp_path, kind):
    folder, batches = cifar_batches
    marker = tmp_path / f"pwned-{kind}"
    if kind == "numpy-runstring":
        payload = _numpy_runstring_payload(marker)
    else:
        batch = dict(batches["data_batch_3"])
        batch[b"batch_label"] = (_SystemPayload if kind == "os.system" else _ExecPayload)(marker)
        payload = pickle.dumps(batch)
    (folder / "data_batch_3").write_bytes(payload)
    with pytest.raises(DatasetError, match="refusing to load global") as err:
        load_cifar10("train", [folder.parent.parent])
    assert "data_batch_3" in str(err.value)
    assert not marker.exists()


def test_cifar10_malicious_payload_is_real(tmp_path):
    """Control: the os.system payload above does run under plain pickle.loads."""
    marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps({b"x": _SystemPayload(marker)}))
    assert marker.exists()


def test_cifar10_batch_with_wrong_content(cifar_batches):
    folder, batches = cifar_batches
    bad = dict(batches["test_batch"])
    bad[b"data"] = bad[b"data"].astype(np.float32)
    (folder / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(DatasetError, match="uint8"):
        load_cifar10("test", [folder.parent.parent])
    (folder / "test_batch").write_bytes(pickle.dumps(["not", "a", "dict"]))
    with pytest.raises(DatasetError, match="not a dict"):
        load_cifar10("test", [folder.parent.parent])


# ---------------------------------------------------------------------------
# CIFAR-10: JPEG layout of the offline copy
# ---------------------------------------------------------------------------
def cifar_color(label: int, i: int):
    return (20 * label + 10, 100 + 40 * i, 200 - 15 * label)


@pytest.fixture
def cifar_jpeg_tree(tmp_path):
    """train/<class>/NNNN.jpg (2 per class) and test/<class>/NNNN.jpg (1 per class), solid colors."""
    tree = tmp_path / "cifar-jpg-tree"
    for label, cls in enumerate(CIFAR10_CLASSES):
        for i in range(2):
            save_image(tree / "train" / cls / f"{3 - i:04d}.jpg", solid(32, 32, cifar_color(label, i)), quality=95)
        save_image(tree / "test" / cls / "0007.jpg", solid(32, 32, cifar_color(label, 0)), quality=95)
    return tree


def check_cifar_jpegs(d, split):
    per_class = 2 if split == "train" else 1
    assert d.images.shape == (10 * per_class, 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.labels.tolist() == [c for c in range(10) for _ in range(per_class)]
    for k in range(len(d)):
        label, i = divmod(k, per_class)
        # sorted by file name within a class: 0002.jpg (i=1) comes before 0003.jpg (i=0)
        color = cifar_color(label, (1 - i) if split == "train" else 0)
        assert close(d.images[k], color), (k, d.images[k, :, 0, 0], color)


def test_cifar10_jpeg_archive_read_in_place(cifar_jpeg_tree, tmp_path):
    root = tmp_path / "root"
    make_tar(root / "cifar10" / "cifar10-jpg.tar.gz", cifar_jpeg_tree)
    for split in ("train", "test"):
        check_cifar_jpegs(load_cifar10(split, [root]), split)


def test_cifar10_jpeg_extracted_folder(cifar_jpeg_tree, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    cifar_jpeg_tree.rename(root / "cifar10")
    check_cifar_jpegs(load_cifar10("test", [root]), "test")


def test_cifar10_jpeg_rejects_unknown_class_and_corrupt_image(cifar_jpeg_tree, tmp_path):
    save_image(cifar_jpeg_tree / "test" / "unicorn" / "0001.jpg", solid(32, 32, (1, 2, 3)))
    with pytest.raises(DatasetError, match="unicorn"):
        load_cifar10("test", [cifar_jpeg_tree])
    (cifar_jpeg_tree / "test" / "unicorn" / "0001.jpg").unlink()
    (cifar_jpeg_tree / "test" / "cat" / "0007.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match="cat/0007.jpg"):
        load_cifar10("test", [cifar_jpeg_tree])


# ---------------------------------------------------------------------------
# SVHN
# ---------------------------------------------------------------------------
def test_svhn_mat_file(tmp_path):
    import scipy.io

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[1], [10], [3], [10], [9]], dtype=np.uint8)
    (tmp_path / "svhn").mkdir()
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": y})
    d = load_svhn("test", [tmp_path])
    assert d.images.shape == (5, 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.labels.tolist() == [1, 0, 3, 0, 9]
    for i in range(5):
        assert torch.equal(d.images[i].permute(1, 2, 0), torch.from_numpy(x[..., i]))
    with pytest.raises(DatasetError, match=r"train_32x32\.mat.*ufldl\.stanford\.edu"):
        load_svhn("train", [tmp_path])
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"MATLAB 5.0 but not really")
    with pytest.raises(DatasetError, match="cannot read SVHN"):
        load_svhn("test", [tmp_path])


# ---------------------------------------------------------------------------
# CelebA
# ---------------------------------------------------------------------------
FACE, BACKGROUND = (200, 150, 120), (20, 40, 240)


def celeba_image() -> np.ndarray:
    """178x218 with the central 108x108 square in FACE, the rest BACKGROUND."""
    img = solid(218, 178, BACKGROUND)
    top, left = (218 - 108) // 2, (178 - 108) // 2
    img[top : top + 108, left : left + 108] = FACE
    return img


@pytest.fixture
def celeba_root(tmp_path):
    base = tmp_path / "root" / "celeba"
    partition = [0, 0, 1, 2, 0, 2]
    lines = []
    for i, part in enumerate(partition, 1):
        save_image(base / "img_align_celeba" / f"{i:06d}.jpg", celeba_image(), quality=95, subsampling=0)
        lines.append(f"{i:06d}.jpg {part}")
    (base / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return base.parent


def check_celeba(d, n):
    assert d.images.shape == (n, 3, 64, 64) and d.images.dtype == torch.uint8
    assert d.labels.tolist() == [0] * n
    # cropped to the face: the inside is FACE, and no background is left even at the border
    inner = d.images[:, :, 4:60, 4:60].float().mean(dim=(0, 2, 3))
    assert torch.allclose(inner, torch.tensor(FACE, dtype=torch.float32), atol=4), inner
    assert int(d.images[:, 2].max()) < 200 and int(d.images[:, 0].min()) > 120


def test_celeba_folder_crop_and_official_partition(celeba_root):
    check_celeba(load_celeba("train", [celeba_root]), 3)
    check_celeba(load_celeba("test", [celeba_root]), 2)


def test_celeba_zip_read_in_place(celeba_root, tmp_path):
    base = celeba_root / "celeba"
    root = tmp_path / "zip-root"
    make_zip(root / "celeba" / "img_align_celeba.zip", base / "img_align_celeba", "img_align_celeba")
    (root / "celeba" / "list_eval_partition.txt").write_text((base / "list_eval_partition.txt").read_text())
    check_celeba(load_celeba("test", [root]), 2)


def test_celeba_cannot_be_downloaded(tmp_path):
    (tmp_path / "celeba").mkdir()
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(DatasetError) as err:
        load_celeba("train", [tmp_path], allow_download=True)
    msg = str(err.value)
    assert "img_align_celeba.zip" in msg and str(tmp_path / "celeba") in msg
    assert "no direct link" in msg and "mmlab.ie.cuhk.edu.hk" in msg


def test_celeba_missing_listed_image(celeba_root):
    (celeba_root / "celeba" / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(DatasetError, match="000004.jpg"):
        load_celeba("test", [celeba_root])


# ---------------------------------------------------------------------------
# Tiny ImageNet
# ---------------------------------------------------------------------------
WNIDS = ["n01443537", "n01629819", "n01641577"]


def tin_color(label: int, i: int):
    return (60 * label + 20, 50 + 30 * i, 90)


@pytest.fixture
def tin_tree(tmp_path):
    """tiny-imagenet-200/ with 3 classes x 2 train images (one grayscale) and 4 val images."""
    top = tmp_path / "tin-src" / "tiny-imagenet-200"
    (top / "val" / "images").mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(WNIDS))  # no trailing newline, like the offline copy
    (top / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in WNIDS))
    for label, wnid in enumerate(WNIDS):
        for i in range(2):
            path = top / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"
            if label == 1 and i == 1:
                save_image(path, Image.new("L", (64, 64), 77), "JPEG", quality=95)  # grayscale JPEG
            else:
                save_image(path, solid(64, 64, tin_color(label, i)), "JPEG", quality=95)
        (top / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    ann = []
    for i, label in enumerate([2, 0, 1, 2]):
        save_image(top / "val" / "images" / f"val_{i}.JPEG", solid(64, 64, tin_color(label, 0)), "JPEG", quality=95)
        ann.append(f"val_{i}.JPEG\t{WNIDS[label]}\t0\t0\t63\t63")
    (top / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return top


def check_tin(d, split):
    if split == "train":
        assert d.images.shape == (6, 3, 64, 64) and d.labels.tolist() == [0, 0, 1, 1, 2, 2]
        gray = d.images[3]
        assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2]) and close(gray, (77, 77, 77), 3)
        assert close(d.images[4], tin_color(2, 0))
    else:
        assert d.images.shape == (4, 3, 64, 64) and d.labels.tolist() == [2, 0, 1, 2]
        for k, label in enumerate([2, 0, 1, 2]):
            assert close(d.images[k], tin_color(label, 0))
    assert d.images.dtype == torch.uint8 and d.labels.dtype == torch.int64


@pytest.mark.parametrize("layout", ["folder", "tar.gz", "zip"])
def test_tiny_imagenet_layouts(tin_tree, tmp_path, layout):
    root = tmp_path / "root"
    if layout == "folder":
        root.mkdir()
        tin_tree.rename(root / "tiny-imagenet-200")
    elif layout == "tar.gz":
        make_tar(root / "tiny-imagenet" / "tiny-imagenet-202-subset.tar.gz", tin_tree, "tiny-imagenet-200")
    else:
        make_zip(root / "tiny-imagenet-200.zip", tin_tree, "tiny-imagenet-200")
    for split in ("train", "test"):
        check_tin(load_tiny_imagenet(split, [root]), split)


def test_tiny_imagenet_unannotated_val_image(tin_tree):
    save_image(tin_tree / "val" / "images" / "val_9.JPEG", solid(64, 64, (1, 2, 3)), "JPEG")
    with pytest.raises(DatasetError, match="val_9.JPEG has no annotation"):
        load_tiny_imagenet("test", [tin_tree.parent])


# ---------------------------------------------------------------------------
# Stanford Cars
# ---------------------------------------------------------------------------
def car_image(i: int) -> Image.Image:
    """Various sizes and modes: landscape, portrait, grayscale, CMYK."""
    w, h = [(128, 85), (85, 128), (128, 96), (100, 100)][i % 4]
    color = (10 * i, 120, 250 - 10 * i)
    if i % 5 == 3:
        return Image.new("L", (w, h), 90)
    if i % 5 == 4:
        return Image.new("RGB", (w, h), color).convert("CMYK")
    return Image.new("RGB", (w, h), color)


def car_color(i: int):
    return (90, 90, 90) if i % 5 == 3 else (10 * i, 120, 250 - 10 * i)


def write_cars_train_only(base: Path, n: int = 12) -> list[int]:
    labels = [(7 * i) % 196 + 1 for i in range(n)]
    for i in range(n):
        save_image(base / "cars_train" / f"{i + 1:05d}.jpg", car_image(i), "JPEG", quality=95)
    (base / "train_perfect_preds.txt").write_text("\n".join(map(str, labels)) + "\n")
    (base / "class_names.txt").write_text("".join(f"car {k}\n" for k in range(1, 197)))
    return labels


def check_cars_train_only(root: Path, labels: list[int]):
    train, test = load_stanford_cars("train", [root]), load_stanford_cars("test", [root])
    assert len(train) + len(test) == 12 and len(test) == 1  # every 10th image: 00010.jpg
    assert test.labels.tolist() == [labels[9] - 1]
    assert train.labels.tolist() == [lab - 1 for i, lab in enumerate(labels) if i != 9]
    for d, idx in ((train, [i for i in range(12) if i != 9]), (test, [9])):
        assert d.images.shape == (len(idx), 3, 64, 64) and d.images.dtype == torch.uint8 and d.name == "cars"
        for k, i in enumerate(idx):
            assert close(d.images[k], car_color(i), 8), (i, d.images[k, :, 32, 32])


def test_cars_train_only_folder(tmp_path):
    labels = write_cars_train_only(tmp_path / "stanford-cars")
    check_cars_train_only(tmp_path, labels)


def test_cars_train_only_archive_read_in_place(tmp_path):
    labels = write_cars_train_only(tmp_path / "src")
    root = tmp_path / "root"
    make_tar(root / "stanford-cars" / "cars-train-128px.tar.gz", tmp_path / "src", "stanford-cars")
    check_cars_train_only(root, labels)


def test_cars_label_count_mismatch(tmp_path):
    write_cars_train_only(tmp_path / "stanford-cars")
    (tmp_path / "stanford-cars" / "train_perfect_preds.txt").write_text("1\n2\n")
    with pytest.raises(DatasetError, match="12 images in cars_train/ but 2 labels"):
        load_stanford_cars("train", [tmp_path])


def write_annos(path: Path, fnames: list[str], classes: list[int]) -> None:
    import scipy.io

    dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    ann = np.zeros((1, len(fnames)), dtype=dtype)
    for i, (f, c) in enumerate(zip(fnames, classes)):
        ann[0, i] = (np.uint8(1), np.uint8(1), np.uint8(50), np.uint8(40), np.uint8(c), f)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"annotations": ann})


def test_cars_official_devkit_layout(tmp_path):
    base = tmp_path / "cars"
    for split, n, classes in (("train", 3, [1, 196, 5]), ("test", 2, [7, 9])):
        names = [f"{i + 1:05d}.jpg" for i in range(n)]
        for i, name in enumerate(names):
            save_image(base / f"cars_{split}" / name, car_image(i + (5 if split == "test" else 0)), "JPEG", quality=95)
        ann = (base / "devkit" / "cars_train_annos.mat") if split == "train" else (base / "cars_test_annos_withlabels.mat")
        write_annos(ann, names, classes)
    train, test = load_stanford_cars("train", [tmp_path]), load_stanford_cars("test", [tmp_path])
    assert train.labels.tolist() == [0, 195, 4] and test.labels.tolist() == [6, 8]
    assert train.images.shape == (3, 3, 64, 64) and test.images.shape == (2, 3, 64, 64)
    assert close(train.images[1], car_color(1), 8) and close(test.images[0], car_color(5), 8)
    (base / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DatasetError, match="cars_test_annos_withlabels.mat"):
        load_stanford_cars("test", [tmp_path])


def test_cover_resize_keeps_the_center(tmp_path):
    """Shorter side to 64 then a center crop: a 200x100 image with red sides and a green center square."""
    img = solid(100, 200, (255, 0, 0))
    img[:, 50:150] = (0, 255, 0)
    arr = cover_rgb(Image.fromarray(img), 64, 64)
    err = np.abs(arr.astype(int) - (0, 255, 0))
    assert arr.shape == (64, 64, 3) and err[:, 1:-1].max() <= 2 and err.max() <= 20  # edges: resampling support


# ---------------------------------------------------------------------------
# any image folder
# ---------------------------------------------------------------------------
@pytest.fixture
def messy_folder(tmp_path):
    """class a: RGB JPEG, RGBA PNG, palette PNG; class b: 16-bit PNG, CMYK JPEG, a corrupted JPEG,
    a text file named .png; plus files that are not images and a hidden one."""
    top = tmp_path / "messy"
    save_image(top / "a" / "rgb.jpg", solid(20, 30, (250, 10, 10)), quality=95)
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (0, 0, 255, 255)  # left half opaque blue, right half fully transparent
    save_image(top / "a" / "rgba.png", Image.fromarray(rgba, "RGBA"))
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    save_image(top / "a" / "palette.png", pal)
    save_image(top / "b" / "sixteen.png", Image.fromarray(np.full((16, 16), 65535, np.uint16)))
    save_image(top / "b" / "cmyk.jpg", Image.new("RGB", (16, 16), (255, 0, 0)).convert("CMYK"), "JPEG", quality=95)
    good = io.BytesIO()
    Image.fromarray(solid(16, 16, (1, 2, 3))).save(good, "JPEG")
    (top / "b" / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (top / "b" / "text.png").write_text("this is not a PNG\n")
    (top / "b" / "notes.txt").write_text("ignored")
    save_image(top / "b" / ".hidden.png", solid(4, 4, (0, 0, 0)))
    return top


def test_image_folder_modes_labels_and_skipped_files(messy_folder):
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\) of 7"):
        d = load_image_folder(messy_folder, 16)
    assert d.images.shape == (5, 3, 16, 16) and d.images.dtype == torch.uint8
    # order: label, then natural path order: a/palette, a/rgb, a/rgba, b/cmyk, b/sixteen
    assert d.labels.tolist() == [0, 0, 0, 1, 1]
    palette, rgb, rgba, cmyk, sixteen = d.images
    assert close(palette, (0, 200, 0), 0) and close(rgb, (250, 10, 10))
    assert close(rgba[:, :, :8], (0, 0, 255), 0) and close(rgba[:, :, 8:], (255, 255, 255), 0)  # alpha on white
    assert close(cmyk, (255, 0, 0), 6)
    assert close(sixteen, (255, 255, 255), 0)  # 65535 scaled to 255, not clipped garbage


def test_image_folder_strict_names_the_bad_file(messy_folder):
    with pytest.raises(DatasetError, match=r"b/(text\.png|truncated\.jpg).*and 1 more"):
        load_image_folder(messy_folder, 16, strict=True)


def test_image_folder_grayscale_flat_and_sized(tmp_path):
    top = tmp_path / "gray"
    save_image(top / "x.png", Image.fromarray(np.full((10, 40), 32896, np.uint16)))  # 16-bit: 32896/257 = 128
    save_image(top / "y.jpg", Image.new("L", (30, 30), 40), quality=95)
    save_image(top / "sub" / "z.png", Image.new("1", (12, 12), 1))
    d = load_image_folder(top, (8, 12))
    assert d.images.shape == (3, 1, 8, 12) and d.labels.tolist() == [0, 0, 0]  # an image in the root: no classes
    assert close(d.images[1], (128,), 0) and close(d.images[2], (40,), 3) and close(d.images[0], (255,), 0)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(tmp_path / "nope", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        load_image_folder(tmp_path / "empty", 8)
    (tmp_path / "texts" / "deep").mkdir(parents=True)
    (tmp_path / "texts" / "deep" / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError, match="no image files"):
        load_image_folder(tmp_path / "texts", 8)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="none of the 1 image files"):
        load_image_folder(tmp_path / "bad", 8)


# ---------------------------------------------------------------------------
# the real offline copies (slow; run one at a time: pytest -m slow -k <name>)
# ---------------------------------------------------------------------------
def _need(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    torch.set_num_threads(1)


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    print(f"{fn.__name__}{args[:1]}: {len(out)} images in {time.perf_counter() - t:.1f} s")
    return out


@pytest.mark.slow
def test_real_fashion_mnist():
    _need(SHARED / "fashion-mnist")
    train, test = _timed(load_fashion_mnist, "train", [SHARED]), _timed(load_fashion_mnist, "test", [SHARED])
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10 and torch.bincount(test.labels).tolist() == [1000] * 10


@pytest.mark.slow
def test_real_cifar10_jpeg():
    _need(SHARED / "cifar10")
    train, test = _timed(load_cifar10, "train", [SHARED]), _timed(load_cifar10, "test", [SHARED])
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [5000] * 10 and torch.bincount(test.labels).tolist() == [1000] * 10


@pytest.mark.slow
def test_real_tiny_imagenet():
    _need(SHARED / "tiny-imagenet")
    train, test = _timed(load_tiny_imagenet, "train", [SHARED]), _timed(load_tiny_imagenet, "test", [SHARED])
    assert train.images.shape == (20200, 3, 64, 64) and test.images.shape == (10100, 3, 64, 64)
    assert int(train.labels.max()) + 1 == 202 and torch.bincount(train.labels).tolist() == [100] * 202
    assert set(test.labels.tolist()) == set(range(202))


@pytest.mark.slow
def test_real_stanford_cars():
    _need(SHARED / "stanford-cars")
    train, test = _timed(load_stanford_cars, "train", [SHARED]), _timed(load_stanford_cars, "test", [SHARED])
    assert len(train) + len(test) == 8144 and len(test) == 814
    assert train.images.shape[1:] == (3, 64, 64) and test.images.shape[1:] == (3, 64, 64)
    assert int(torch.cat([train.labels, test.labels]).max()) == 195 and int(train.labels.min()) == 0
