"""Long-tailed count profiles and the rules that pick which training images to keep.

The profile is the usual exponential one, n_i = floor(n_max * (1/IR) ** (i / (C - 1))) in
label order. Two rules turn it into a subset of a balanced (or naturally distributed)
training set:

- ``ltwb``: the first n_i images of each class in the order the source lists them;
- ``ldam``: the rule of LDAM-DRW's ``IMBALANCECIFAR10.gen_imbalanced_data``: seed the legacy
  NumPy generator with 0, then for each class in ascending order shuffle its indices and keep
  the first n_i. A local ``np.random.RandomState(0)`` draws the same stream as
  ``np.random.seed(0)`` followed by ``np.random.shuffle`` without touching global state.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lort.errors import InputError
from lort.options import LT_SPLITS

SplitRule = Literal["ltwb", "ldam"]

# LDAM-DRW seeds its generator with this fixed value, whatever the run's seed.
LDAM_SEED = 0


def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> np.ndarray:
    """n_i = floor(n_max * (1/IR) ** (i / (C - 1))) in label order (int64).

    With one class the profile is ``[n_max]``.
    """
    if num_classes < 1:
        raise InputError(f"num_classes must be at least 1, got {num_classes}")
    if n_max < 1:
        raise InputError(f"n_max must be at least 1, got {n_max}")
    if not imbalance_ratio >= 1.0:  # also rejects NaN
        raise InputError(
            f"imbalance ratio must be >= 1 (largest / smallest class), got {imbalance_ratio}"
        )
    i = np.arange(num_classes)
    exponent = i / max(num_classes - 1, 1)
    return np.floor(n_max * (1.0 / imbalance_ratio) ** exponent).astype(np.int64)


def keep_long_tail(labels: np.ndarray, counts: np.ndarray, rule: SplitRule) -> np.ndarray:
    """Indices into ``labels`` of the images kept for per-class ``counts``, sorted ascending.

    A class with fewer images than its count keeps all of them.
    """
    labels = np.asarray(labels)
    if rule not in LT_SPLITS:
        raise InputError(f"unknown split rule {rule!r}; choose one of {', '.join(LT_SPLITS)}")
    rng = np.random.RandomState(LDAM_SEED) if rule == "ldam" else None
    kept = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if rng is not None:
            rng.shuffle(idx)
        kept.append(idx[:n])
    return np.sort(np.concatenate(kept)).astype(np.int64)
