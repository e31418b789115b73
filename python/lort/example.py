"""A small synthetic long-tailed example for ``lort analyze --example``.

Twenty classes with training counts falling from 1,000 to 10 images
(imbalance ratio 100), a balanced test set of 100 rows per class, and logits
shaped like those of a classifier trained with plain cross-entropy on such
data: head classes get a larger bias and a larger margin on their own rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lort.data import long_tail_counts

NUM_CLASSES = 20
N_MAX = 1000
IMBALANCE = 100
TEST_PER_CLASS = 100


def write_example(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Write logits.npy, labels.npy and train_counts.npy into ``folder``."""
    rng = np.random.default_rng(seed)
    counts = long_tail_counts(N_MAX, NUM_CLASSES, IMBALANCE)
    share = np.log(counts / counts.max())  # 0 for the head, about -4.6 for the tail
    labels = np.repeat(np.arange(NUM_CLASSES), TEST_PER_CLASS)
    logits = rng.normal(0.0, 1.0, size=(labels.size, NUM_CLASSES))
    logits += 0.6 * share  # class bias towards the head
    logits[np.arange(labels.size), labels] += 3.0 + 0.5 * share[labels]  # margin
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "logits": folder / "logits.npy",
        "labels": folder / "labels.npy",
        "train_counts": folder / "train_counts.npy",
    }
    np.save(paths["logits"], logits.astype(np.float32))
    np.save(paths["labels"], labels)
    np.save(paths["train_counts"], counts)
    return paths
