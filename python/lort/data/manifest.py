"""The JSON-ready manifest that records how a dataset was built.

Keys: dataset, data_root, imbalance_ratio (the ratio applied; None for natural counts),
split_rule ("ltwb", "ldam" or "natural"), n_max (head count of the profile; None for natural
counts), seed, val_fraction, val_rule (where validation came from, in words: "leftover: V per
class from the images the profile did not keep", "fraction F carved from training", "shipped
with the dataset" or "none"), num_classes, class_names, image_size, per-class counts
train_counts / val_counts / test_counts (lists of int; val_counts is all zeros without a
validation set), val_from_kept (per class, how many validation images came out of the images
the profile kept: all of them for a carve, under the leftover rule only what a class without
enough leftovers gave up of its own), train_total / val_total / test_total, kept_sha256,
val_sha256 and warnings.

``kept_sha256`` hashes the long-tailed training subset *before* any validation images are
carved out of it, so it identifies the long-tail cut alone: the sha256 hex digest of the kept
indices into the original training set, sorted ascending, as little-endian int64 bytes.
``val_sha256`` hashes the validation indices into the original training set the same way
(None when validation is shipped or absent); the training images are the kept ones minus
those.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np


def index_sha256(indices: np.ndarray) -> str:
    """sha256 hex of ``indices`` sorted ascending, as little-endian int64 bytes."""
    ordered = np.sort(np.asarray(indices, dtype=np.int64)).astype("<i8")
    return hashlib.sha256(ordered.tobytes()).hexdigest()


def per_class(labels: np.ndarray | None, num_classes: int) -> list[int]:
    """Per-class image counts as plain ints (all zeros for a missing split)."""
    if labels is None:
        return [0] * num_classes
    return [int(n) for n in np.bincount(labels, minlength=num_classes)]


def make_manifest(
    *,
    dataset: str,
    data_root: Path | None,
    imbalance_ratio: float | None,
    split_rule: str,
    n_max: int | None,
    seed: int,
    val_fraction: float,
    val_rule: str,
    val_from_kept: np.ndarray,
    class_names: list[str],
    image_size: int,
    train_labels: np.ndarray,
    val_labels: np.ndarray | None,
    test_labels: np.ndarray,
    kept_ids: np.ndarray,
    val_ids: np.ndarray | None,
    warnings: list[str],
) -> dict[str, Any]:
    """Assemble the manifest (see the module docstring for the keys)."""
    num_classes = len(class_names)
    return {
        "dataset": dataset,
        "data_root": None if data_root is None else str(data_root.resolve()),
        "imbalance_ratio": None if imbalance_ratio is None else float(imbalance_ratio),
        "split_rule": split_rule,
        "n_max": None if n_max is None else int(n_max),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "val_rule": val_rule,
        "num_classes": num_classes,
        "class_names": list(class_names),
        "image_size": int(image_size),
        "train_counts": per_class(train_labels, num_classes),
        "val_counts": per_class(val_labels, num_classes),
        "test_counts": per_class(test_labels, num_classes),
        "val_from_kept": [int(n) for n in val_from_kept],
        "train_total": int(train_labels.size),
        "val_total": 0 if val_labels is None else int(val_labels.size),
        "test_total": int(test_labels.size),
        "kept_sha256": index_sha256(kept_ids),
        "val_sha256": None if val_ids is None else index_sha256(val_ids),
        "warnings": list(warnings),
    }
