"""--dataset folder: any folder of images as a training set, with a fixed held-out slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from agelab.config import ConfigError, build_config
from agelab.data import FOLDER_TEST_EVERY, DatasetError, load_dataset
from agelab.data.cache import CACHE_DIR


def make_folder(root, n_per_class=10, classes=("cats", "dogs"), broken=0):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            size = (40 + i, 30 + 2 * i)  # mixed sizes: each is covered and center-cropped
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    for i in range(broken):
        (root / classes[0] / f"broken{i}.png").write_text("not a png")
    return root


def test_splits_are_disjoint_and_cover_the_folder(tmp_path):
    folder = make_folder(tmp_path / "imgs")
    train = load_dataset("folder", "train", 32, str(folder))
    test = load_dataset("folder", "test", 32, str(folder))
    assert len(train) + len(test) == 20 and len(test) == 20 // FOLDER_TEST_EVERY
    assert train.images.shape[1:] == (3, 32, 32) and set(train.labels.tolist()) == {0, 1}
    everything = torch.cat([train.images, test.images]).flatten(1)
    assert len({tuple(row.tolist()) for row in everything}) == 20  # no image in both splits


def test_cache_lives_outside_the_image_folder(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "imgs")
    monkeypatch.setenv("AGELAB_DATA", str(tmp_path / "data"))
    first = load_dataset("folder", "train", 32, str(folder))
    assert not (folder / CACHE_DIR).exists()
    assert list((tmp_path / "data" / CACHE_DIR).glob("folder-all-32px-*.json"))
    again = load_dataset("folder", "train", 32, str(folder))
    assert torch.equal(first.images, again.images)


def test_unreadable_files_are_skipped_with_a_count_or_fail_with_strict(tmp_path):
    folder = make_folder(tmp_path / "imgs", broken=2)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        data = load_dataset("folder", "train", 32, str(folder))
    with pytest.warns(UserWarning, match="skipped 2 unreadable.*in the cached copy decoded earlier"):
        test = load_dataset("folder", "test", 32, str(folder))  # served from the decode cache: still said
    assert len(data) + len(test) == 20
    with pytest.raises(DatasetError, match="broken"):
        load_dataset("folder", "train", 32, str(folder), strict=True)


def test_folder_needs_a_path_and_enough_images(tmp_path):
    with pytest.raises(ConfigError, match="--data-root"):
        build_config(None, dataset="folder")
    with pytest.raises(DatasetError, match="--data-root"):
        load_dataset("folder", "train", 32, None)
    few = make_folder(tmp_path / "few", n_per_class=2, classes=("a",))
    with pytest.raises(DatasetError, match="too few images"):
        load_dataset("folder", "test", 32, str(few))
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("folder", "train", 32, str(tmp_path / "nowhere"))


def test_cli_strict_folder_run_fails_in_one_line(tmp_path, capsys):
    from conftest import invoke

    folder = make_folder(tmp_path / "imgs", broken=1)
    code, _, err = invoke(["train", "--dataset", "folder", "--data-root", str(folder), "--strict", "--iterations", "1",
                  "--width", "4", "--latent-dim", "2", "--batch-size", "4", "--out-dir", str(tmp_path / "runs"), "--no-progress"], capsys)
    assert code == 2 and "broken0.png" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
