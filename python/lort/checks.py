"""Input validation in numpy alone: the rules that the methods (plain torch), the statistics
(the compiled core) and the figures share, so that none of them needs another to check its
input."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lort.errors import InputError


def check_counts(
    train_counts: npt.ArrayLike,
    num_classes: int | None = None,
    *,
    need_positive: str | None = None,
) -> np.ndarray:
    """Per-class training counts as a contiguous 1-D int64 array, or InputError: whole
    numbers (integers, or floats without a fraction), none negative, ``num_classes`` of them
    when given. ``need_positive`` names what needs every count to be at least 1 (a log prior,
    margins, effective numbers); a class without training images is then an error. The one
    rule for counts, wherever they come from."""
    counts = np.asarray(train_counts)
    if num_classes is not None and counts.shape != (num_classes,):
        raise InputError(
            f"train counts must be {num_classes} numbers (one per class), got shape {counts.shape}"
        )
    if counts.ndim != 1 or counts.size == 0:
        raise InputError(f"train counts must be a non-empty 1-D array, got shape {counts.shape}")
    whole_floats = counts.dtype.kind == "f" and bool(
        np.all(np.isfinite(counts) & (counts == np.round(counts)))
    )
    if counts.dtype.kind not in "iu" and not whole_floats:
        raise InputError(f"train counts must hold whole numbers, got dtype {counts.dtype}")
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    if np.any(counts < 0):
        raise InputError("train counts must not be negative")
    if need_positive is not None and np.any(counts == 0):
        empty = np.flatnonzero(counts == 0)[:10].tolist()
        raise InputError(
            f"{need_positive} needs at least one training image per class; classes {empty} have "
            "none: drop those classes from the dataset or choose a method that ignores counts"
        )
    return counts
