"""digits-lt: scikit-learn's bundled 8x8 handwritten digits (no download).

A balanced test set of :data:`TEST_PER_CLASS` images per class is drawn with the seed; the
remaining images form the training pool, made long-tailed with n_max = its smallest class
count (default imbalance ratio :data:`DEFAULT_RATIO`). Images are 1x8x8, scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np

from lort.data.sources import RawSplits
from lort.data.transforms import DIGITS_MEAN, DIGITS_STD, TransformSpec

TEST_PER_CLASS = 30
DEFAULT_RATIO = 10.0
NUM_CLASSES = 10
PIXEL_MAX = 16.0


def load_digits_splits(seed: int) -> RawSplits:
    """The digits with a balanced test set chosen by ``np.random.default_rng(seed)``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / PIXEL_MAX).astype(np.float32)[:, None]
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == c), TEST_PER_CLASS, replace=False)
                for c in range(NUM_CLASSES)
            ]
        )
    )
    train = np.setdiff1d(np.arange(labels.size), test)
    return RawSplits(
        class_names=[str(c) for c in range(NUM_CLASSES)],
        transform_spec=TransformSpec("digits", 8, DIGITS_MEAN, DIGITS_STD),
        in_channels=1,
        train_labels=labels[train],
        train_images=images[train],
        test_labels=labels[test],
        test_images=images[test],
        n_max=int(np.bincount(labels[train], minlength=NUM_CLASSES).min()),
        default_ratio=DEFAULT_RATIO,
        train_ids=train,
    )
