"""Stanford Cars (196 car models): the devkit layout or the train-only offline copy, at 64x64."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from agelab.data import DatasetError, ImageData
from agelab.data.archives import Tree, find_archives, open_tree
from agelab.data.cache import cached_by_source
from agelab.data.decode import decode_images, raise_unreadable, to_image_data
from agelab.data.download import ensure_files
from agelab.data.images import cover_rgb
from agelab.data.lookup import bases, check_roots, check_split, natural_key, searched
from agelab.errors import one_line

# Stanford Cars: https://ai.stanford.edu/~jkrause/cars/car_dataset.html (the original links are
# gone; mirrors of cars_train.tgz, cars_test.tgz, car_devkit.tgz and
# cars_test_annos_withlabels.mat exist, e.g. on Kaggle).
CARS_PAGE = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"
CARS_SIZE = 64
CARS_TEST_EVERY = 10  # train-only copy: images 10, 20, 30, ... (1-based file order) are 'test'
CARS_DIRS = ("stanford-cars/stanford-cars", "stanford-cars", "stanford_cars", "StanfordCars", "cars", "")
CARS_ARCHIVES = ("cars-train*.tar.gz", "cars-train*.tgz", "cars-train*.tar", "cars-train*.zip")


def _cars_annotations(path: Path) -> list[tuple[str, int]]:
    """(file name, class 1..196) of a devkit annotation .mat (struct array ``annotations``)."""
    import scipy.io

    try:
        ann = scipy.io.loadmat(path, squeeze_me=True, variable_names=["annotations"])["annotations"]
        ann = np.atleast_1d(ann)
        return [(str(f).strip(), int(c)) for f, c in zip(ann["fname"], ann["class"])]
    except Exception as exc:
        raise DatasetError(f"cannot read Stanford Cars annotations {path}: {type(exc).__name__}: "
                           f"{one_line(exc)}") from None


def _cars_convert(im: Image.Image) -> np.ndarray:
    return cover_rgb(im, CARS_SIZE, CARS_SIZE)


def _cars_decode(split: str, tree: Tree, names: list[str], labels: list[int], progress: bool) -> ImageData:
    if not names:
        raise DatasetError(f"{tree.where}: no Stanford Cars {split} images")
    lab = np.asarray(labels, dtype=np.int64) - 1
    if lab.min() < 0 or lab.max() > 195:
        raise DatasetError(f"{tree.where}: Stanford Cars class ids must be 1..196")
    images, _, errors = decode_images([(n, tree.source(n)) for n in names], _cars_convert, CARS_SIZE, CARS_SIZE,
                                f"cars {split}", progress)
    raise_unreadable(errors, f"Stanford Cars ({tree.where})")
    return to_image_data("cars", split, images, lab)


_CARS_TRAIN_JPG = re.compile(r"(?:^|/)cars_train/([^/]+\.jpe?g)$", re.IGNORECASE)


@cached_by_source
def _cars_train_only(split: str, source: Path, progress: bool) -> ImageData:
    with open_tree(source, lambda n: bool(_CARS_TRAIN_JPG.search(n))) as tree:
        preds = sorted((n for n in tree.names if n.rsplit("/", 1)[-1] == "train_perfect_preds.txt"), key=len)
        if not preds:
            raise DatasetError(f"{tree.where}: no train_perfect_preds.txt")
        prefix = preds[0][: -len("train_perfect_preds.txt")]
        names = sorted((n for n in tree.names if n.startswith(prefix) and _CARS_TRAIN_JPG.search(n)
                        and "/" not in n[len(prefix) + len("cars_train/"):]), key=natural_key)
        try:
            labels = [int(t) for t in tree.read_text(preds[0]).split()]
        except ValueError:
            raise DatasetError(f"{tree.where}: {preds[0]} must hold one class id per line") from None
        if len(labels) != len(names):
            raise DatasetError(f"{tree.where}: {len(names)} images in cars_train/ but {len(labels)} labels in "
                               f"{preds[0]}")
        test = np.arange(len(names)) % CARS_TEST_EVERY == CARS_TEST_EVERY - 1
        keep = test if split == "test" else ~test
        picked = [n for n, k in zip(names, keep) if k]
        picked_labels = [lab for lab, k in zip(labels, keep) if k]
        return _cars_decode(split, tree, picked, picked_labels, progress)


@cached_by_source
def _cars_devkit(split: str, base: Path, progress: bool) -> ImageData:
    if split == "train":
        folder, ann_path = base / "cars_train", base / "devkit" / "cars_train_annos.mat"
    else:
        folder = base / "cars_test"
        ann_path = next((p for p in (base / "cars_test_annos_withlabels.mat",
                                     base / "devkit" / "cars_test_annos_withlabels.mat") if p.is_file()),
                        base / "cars_test_annos_withlabels.mat")
    ensure_files("Stanford Cars", base,
                 {folder.name + "/": (None, None, None), str(ann_path.relative_to(base)): (None, None, None)},
                 False, hint=f"get them from {CARS_PAGE} or a mirror (e.g. Kaggle): extract cars_train.tgz, "
                             "cars_test.tgz, car_devkit.tgz")
    annotations = _cars_annotations(ann_path)
    with open_tree(folder) as tree:
        names = [a[0] for a in annotations]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DatasetError(f"{folder}: {len(missing)} image(s) listed in {ann_path.name} are missing "
                               f"(first: {missing[0]})")
        return _cars_decode(split, tree, names, [a[1] for a in annotations], progress)


def load_stanford_cars(split: str, roots: list[Path], allow_download: bool = False, *,
                       progress: bool = True) -> ImageData:
    """Stanford Cars (196 car models), resized to 64x64 (shorter side to 64, center crop). Returns (N, 3, 64, 64).

    Two layouts, looked up in a root or its ``stanford-cars/``, ``stanford_cars/``,
    ``cars/`` subfolders (https://ai.stanford.edu/~jkrause/cars/car_dataset.html;
    the original links are gone and there is no download):

    - the official devkit layout (extracted ``cars_train.tgz``, ``cars_test.tgz``,
      ``car_devkit.tgz``): ``cars_train/``, ``cars_test/``,
      ``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat``
      (in the folder or in ``devkit/``). Official split: 8,144 train / 8,041
      test images; classes 1..196 become labels 0..195; bounding boxes are not used.
    - the offline train-only copy: ``cars_train/NNNNN.jpg`` and
      ``train_perfect_preds.txt`` (class 1..196 of each image in file order),
      extracted or read in place from ``cars-train-128px.tar.gz``. It has no
      test images, so a fixed held-out slice stands in for the test split:
      in file-name order, every 10th image (00010.jpg, 00020.jpg, ...; index
      % 10 == 9) is 'test' (814 of 8,144) and the rest 'train' (7,330). Numbers
      on it are not comparable with the official test split.
    """
    check_split(split)
    roots = check_roots(roots, "Stanford Cars")
    for base in bases(roots, CARS_DIRS):
        if (base / "devkit" / "cars_train_annos.mat").is_file() and (base / "cars_train").is_dir():
            return _cars_devkit(split, base, progress)
        if (base / "cars_train").is_dir() and (base / "train_perfect_preds.txt").is_file():
            return _cars_train_only(split, base, progress)
        archives = find_archives(base, CARS_ARCHIVES)
        if archives:
            return _cars_train_only(split, archives[0], progress)
    ensure_files("Stanford Cars", roots[0] / "stanford-cars",
                 {"cars_train/": (None, None, None), "cars_test/": (None, None, None),
                  "devkit/cars_train_annos.mat": (None, None, None),
                  "cars_test_annos_withlabels.mat": (None, None, None)},
                 allow_download, progress=progress,
                 hint=f"get cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat "
                      f"from {CARS_PAGE} or a mirror (e.g. Kaggle) and extract the archives there; "
                      + searched(roots, CARS_DIRS))
    raise DatasetError(f"Stanford Cars: no usable layout found; {searched(roots, CARS_DIRS)}")
