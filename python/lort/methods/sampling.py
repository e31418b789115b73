"""Sampling: instance-balanced (the data as is) or class-balanced re-sampling.

Class-balanced re-sampling draws sample ``i`` with probability proportional to
``1 / n_{y_i}``, so every class present in the training set is drawn equally often in
expectation. The weights feed ``torch.utils.data.WeightedRandomSampler``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lort.errors import LabelError
from lort.methods.base import Method


def class_balanced_sample_weights(labels: npt.ArrayLike) -> np.ndarray:
    """Per-sample weights ``1 / n_{y_i}`` (float64, one per label)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise LabelError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise LabelError("labels must not be negative")
    counts = np.bincount(labels)
    return 1.0 / counts[labels].astype(np.float64)


def make_sampler_weights(method: Method, labels: npt.ArrayLike) -> np.ndarray | None:
    """Weights for a ``WeightedRandomSampler``, or None for plain (instance) sampling."""
    if method.sampler == "class-balanced":
        return class_balanced_sample_weights(labels)
    return None
