"""scikit-learn's bundled 8x8 digits (1,797 images, no download): the embedded default."""

from __future__ import annotations

import numpy as np
import torch


def load_digits_split(split: str):
    from sklearn.datasets import load_digits

    from agelab.data import ImageData

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) * (255.0 / 16.0)  # values 0..16 -> 0..255
    images = torch.from_numpy(np.rint(images).astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    # Fixed held-out split: every 6th image is test (299 images), the rest train (1,498).
    test = torch.arange(len(labels)) % 6 == 5
    keep = test if split == "test" else ~test
    return ImageData("digits", split, images[keep].clone(), labels[keep].clone())
