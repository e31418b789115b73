"""The validation split: carved out of the long-tailed training set (``fraction``), or drawn
from the images the long-tail profile did not keep (``leftover``)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from lort.errors import InputError

ValSplit = Literal["leftover", "fraction"]


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


# The leftover rule's images per class, V = min(max(20, ceil(1000 / K)), floor(5% of n_max)):
# ImageNet-LT's official validation set has 20 per class, but 20 per class is only 200 images
# on CIFAR-10, too few to choose on, hence at least 1,000 in all (100 per class there, 20 on
# CIFAR-100). The head class keeps all its images under the profile, so it gives V of its own:
# the cap keeps that to at most 5% of it (100 of 5,000 on CIFAR-10, 20 of 500 on CIFAR-100).
LEFTOVER_MIN_PER_CLASS = 20
LEFTOVER_MIN_TOTAL = 1000
LEFTOVER_HEAD_SHARE = 0.05


def leftover_per_class(num_classes: int, n_max: int) -> int:
    """V, the validation images per class of the leftover rule (at least 1)."""
    wanted = max(LEFTOVER_MIN_PER_CLASS, math.ceil(LEFTOVER_MIN_TOTAL / num_classes))
    return min(wanted, max(1, math.floor(LEFTOVER_HEAD_SHARE * n_max)))


def leftover_val_split(
    labels: np.ndarray, kept: np.ndarray, num_classes: int, per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, from_kept) for a training set cut by a long-tail profile.

    ``labels`` are those of the whole source training set and ``kept`` (ascending) the indices
    the profile kept. Each class gives ``per_class`` images to validation, drawn with
    ``np.random.default_rng(seed)`` from its images the profile did not keep; a class with
    fewer leftovers takes them all and the rest from its kept images, always leaving it at
    least one. ``train`` is ``kept`` without those (same order), ``val`` ascending indices
    into ``labels``, ``from_kept`` how many of its kept images each class gave (int64).
    """
    labels = np.asarray(labels)
    is_kept = np.zeros(labels.size, dtype=bool)
    is_kept[kept] = True
    rng = np.random.default_rng(seed)
    val = []
    from_kept = np.zeros(num_classes, dtype=np.int64)
    for c in range(num_classes):
        in_class = labels == c
        left = np.flatnonzero(in_class & ~is_kept)
        own = np.flatnonzero(in_class & is_kept)
        val.append(rng.permutation(left)[:per_class])
        short = min(per_class - val[-1].size, max(own.size - 1, 0))
        if short > 0:
            val.append(rng.permutation(own)[:short])
            from_kept[c] = short
    val_idx = np.sort(np.concatenate([np.empty(0, np.int64), *val])).astype(np.int64)
    train = kept[~np.isin(kept, val_idx)].astype(np.int64)
    return train, val_idx, from_kept
