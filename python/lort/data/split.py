"""The stratified validation split carved out of the long-tailed training set."""

from __future__ import annotations

import numpy as np

from lort.errors import InputError


def stratified_val_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..len(labels)-1`` into (train, val), both sorted ascending.

    Each class gives ``round(val_fraction * n)`` of its ``n`` images to validation, at least
    one where ``n >= 2`` and never all of them, chosen with ``np.random.default_rng(seed)``.
    A class with a single image keeps it for training.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    if val_fraction == 0.0:
        return np.arange(labels.size, dtype=np.int64), np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if idx.size < 2:
            continue
        n_val = min(max(1, round(val_fraction * idx.size)), idx.size - 1)
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=np.int64)
    train_mask = np.ones(labels.size, dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask).astype(np.int64), val_idx.astype(np.int64)
