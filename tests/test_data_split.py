"""The stratified validation split, alone and as recorded by ``build_dataset``."""

from __future__ import annotations

import numpy as np
import pytest

from lort.data import build_dataset, stratified_val_split
from lort.errors import InputError


def test_stratified_disjoint_and_deterministic() -> None:
    labels = np.repeat(np.arange(5), [100, 40, 10, 2, 1])
    train, val = stratified_val_split(labels, 0.2, seed=3)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(labels.size))
    assert np.bincount(labels[val], minlength=5).tolist() == [20, 8, 2, 1, 0]
    again = stratified_val_split(labels, 0.2, seed=3)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(stratified_val_split(labels, 0.2, seed=4)[1], val)


def test_tiny_fraction_still_takes_one_and_never_all() -> None:
    labels = np.repeat(np.arange(3), [50, 3, 2])
    train, val = stratified_val_split(labels, 0.001, seed=0)
    assert np.bincount(labels[val], minlength=3).tolist() == [1, 1, 1]
    train, val = stratified_val_split(labels, 0.99, seed=0)
    assert np.bincount(labels[train], minlength=3).tolist() == [1, 1, 1]


def test_zero_fraction_and_bad_fraction() -> None:
    train, val = stratified_val_split(np.array([0, 1, 1]), 0.0, seed=0)
    assert train.tolist() == [0, 1, 2] and val.size == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(InputError, match="val_fraction"):
            stratified_val_split(np.array([0, 1]), bad, seed=0)
    with pytest.raises(InputError, match="val_fraction"):
        build_dataset("digits-lt", val_fraction=1.5)


def test_build_records_the_validation_split() -> None:
    plain = build_dataset("digits-lt", seed=2)
    data = build_dataset("digits-lt", val_fraction=0.25, seed=2)
    m = data.manifest
    assert data.val_labels is not None
    assert m["val_fraction"] == 0.25 and m["val_total"] == data.val_labels.size
    assert m["val_counts"] == np.bincount(data.val_labels, minlength=10).tolist()
    assert all(v >= 1 for v in m["val_counts"])
    # carved out of the long-tailed training set, which keeps its cut and hash
    np.testing.assert_array_equal(
        data.train_counts() + np.array(m["val_counts"]), plain.train_counts()
    )
    assert m["kept_sha256"] == plain.manifest["kept_sha256"]
    assert m["val_sha256"] is not None and plain.manifest["val_sha256"] is None
    assert plain.manifest["val_counts"] == [0] * 10 and plain.val_labels is None
    assert len(data.dataset("val")) == data.val_labels.size
    with pytest.raises(InputError, match="val_fraction > 0"):
        plain.dataset("val")
