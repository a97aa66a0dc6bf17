"""Dataset sources: the registry of loaders, each returning an :class:`~agelab.data.ImageData`.

Every ``load_<name>(split, roots, allow_download=False)`` returns the official
``'train'`` or ``'test'`` split at the dataset's NATIVE resolution (uint8
images (N, C, H, W), int64 labels (N,)); bringing images to the training size
is done elsewhere (:func:`agelab.data.fit_to_size`). The exceptions, as in the
AGE paper's setups, are CelebA (center crop 108x108, resized to 64x64) and
Stanford Cars (shorter side to 64, center crop 64x64): their native images
have no common size.

``roots`` are searched in order (:func:`agelab.data.data_roots`: --data-root,
$AGELAB_DATA, the per-user cache), each with the dataset's usual subfolder
names (``cifar10/``, ``tiny-imagenet/`` ...), so the offline copies described
in ``shared/data/README.md`` are found with ``--data-root shared/data`` and
read in place: archives (.tar.gz, .zip) are read without being extracted.
When nothing is found, ``allow_download=True`` fetches the official files
(checksummed, see :mod:`agelab.data.download`) into the dataset's subfolder of
the FIRST root; otherwise, and for datasets without a direct link (CelebA,
Stanford Cars), a one-line DatasetError says which files to place where.

One module per dataset family: :mod:`~agelab.data.mnist` (MNIST, Fashion-MNIST),
:mod:`~agelab.data.cifar`, :mod:`~agelab.data.svhn`, :mod:`~agelab.data.celeba`,
:mod:`~agelab.data.tinyimagenet`, :mod:`~agelab.data.cars` and
:mod:`~agelab.data.folder` (any folder of images). What they share:
:mod:`~agelab.data.lookup` (where files are found), :mod:`~agelab.data.archives`
(folders and archives read in place), :mod:`~agelab.data.images` (Pillow
conversions) and :mod:`~agelab.data.decode` (threaded decoding).

:data:`SOURCES` maps the dataset names used by the command line to loaders;
:func:`load_image_folder` reads any folder of images (it needs a size).
"""

from __future__ import annotations

from collections.abc import Callable

from agelab.data import ImageData
from agelab.data.cars import load_stanford_cars
from agelab.data.celeba import load_celeba
from agelab.data.cifar import CIFAR10_CLASSES, load_cifar10
from agelab.data.folder import load_image_folder
from agelab.data.images import IMAGE_EXTENSIONS
from agelab.data.mnist import IDX_DATASETS, IDX_FILES, load_fashion_mnist, load_mnist
from agelab.data.svhn import load_svhn
from agelab.data.tinyimagenet import load_tiny_imagenet

__all__ = [
    "SOURCES", "load_mnist", "load_fashion_mnist", "load_cifar10", "load_svhn", "load_celeba",
    "load_tiny_imagenet", "load_stanford_cars", "load_image_folder",
    "IDX_FILES", "IDX_DATASETS", "CIFAR10_CLASSES", "IMAGE_EXTENSIONS",
]

SOURCES: dict[str, Callable[..., ImageData]] = {
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "svhn": load_svhn,
    "celeba": load_celeba,
    "tinyimagenet": load_tiny_imagenet,
    "cars": load_stanford_cars,
}
