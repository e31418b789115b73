"""The long-tail profile and the ``ltwb`` / ``ldam`` rules on pure label arrays.

The published CIFAR-LT sizes are checked here against balanced label arrays with the real
class counts; test_data_cifar.py loads the same cuts end to end from fake batch files.
"""

from __future__ import annotations

import numpy as np
import pytest

import lort.example
from lort.data import keep_long_tail, long_tail_counts
from lort.errors import InputError


def balanced_labels(num_classes: int, per_class: int, seed: int = 1) -> np.ndarray:
    """``per_class`` labels of each class in a shuffled (file-like) order."""
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def ldam_reference(targets: np.ndarray, imb_factor: float, num_classes: int) -> np.ndarray:
    """LDAM-DRW's IMBALANCECIFAR gen_imbalanced_data, on the global legacy RNG."""
    img_max = targets.size / num_classes
    img_num = [int(img_max * imb_factor ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    state = np.random.get_state()
    try:
        np.random.seed(0)
        kept = []
        for the_class, the_img_num in zip(np.unique(targets), img_num, strict=True):
            idx = np.where(targets == the_class)[0]
            np.random.shuffle(idx)
            kept.append(idx[:the_img_num])
    finally:
        np.random.set_state(state)
    return np.concatenate(kept)


def test_profile_formula() -> None:
    counts = long_tail_counts(5000, 10, 100.0)
    assert counts.dtype == np.int64
    assert counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    i = np.arange(100)
    expected = np.floor(500 * (1 / 50) ** (i / 99)).astype(np.int64)
    np.testing.assert_array_equal(long_tail_counts(500, 100, 50), expected)


def test_profile_edge_cases() -> None:
    assert long_tail_counts(7, 1, 100.0).tolist() == [7]
    assert long_tail_counts(30, 4, 1.0).tolist() == [30, 30, 30, 30]
    for bad in (0.5, float("nan")):
        with pytest.raises(InputError, match="imbalance ratio"):
            long_tail_counts(10, 3, bad)
    with pytest.raises(InputError, match="num_classes"):
        long_tail_counts(10, 0, 10.0)
    with pytest.raises(InputError, match="n_max"):
        long_tail_counts(0, 3, 10.0)


def test_example_uses_the_single_implementation() -> None:
    assert lort.example.long_tail_counts is long_tail_counts


@pytest.mark.parametrize(
    ("num_classes", "per_class", "ratio", "total"),
    [(100, 500, 100.0, 10_847), (100, 500, 50.0, 12_608), (10, 5000, 100.0, 12_406)],
)
@pytest.mark.parametrize("rule", ["ltwb", "ldam"])
def test_published_cifar_sizes(
    num_classes: int, per_class: int, ratio: float, total: int, rule: str
) -> None:
    labels = balanced_labels(num_classes, per_class)
    counts = long_tail_counts(per_class, num_classes, ratio)
    kept = keep_long_tail(labels, counts, rule)
    assert kept.size == total == counts.sum()
    np.testing.assert_array_equal(np.bincount(labels[kept], minlength=num_classes), counts)
    assert np.all(np.diff(kept) > 0)


def test_cifar100_ir100_shot_groups() -> None:
    counts = long_tail_counts(500, 100, 100.0)
    many, few = int((counts > 100).sum()), int((counts < 20).sum())
    assert (many, counts.size - many - few, few) == (35, 35, 30)


def test_ltwb_keeps_the_first_images_in_file_order() -> None:
    labels = balanced_labels(5, 40)
    counts = long_tail_counts(40, 5, 10.0)
    kept = keep_long_tail(labels, counts, "ltwb")
    for c, n in enumerate(counts):
        np.testing.assert_array_equal(kept[labels[kept] == c], np.flatnonzero(labels == c)[:n])


@pytest.mark.parametrize(("num_classes", "per_class"), [(10, 5000), (100, 500)])
def test_ldam_matches_the_global_rng_reference(num_classes: int, per_class: int) -> None:
    labels = balanced_labels(num_classes, per_class, seed=7)
    before = np.random.get_state()[1].copy()
    kept = keep_long_tail(labels, long_tail_counts(per_class, num_classes, 100.0), "ldam")
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # global state untouched
    np.testing.assert_array_equal(kept, np.sort(ldam_reference(labels, 0.01, num_classes)))
    assert not np.array_equal(kept, keep_long_tail(labels, np.bincount(labels[kept]), "ltwb"))


def test_short_classes_keep_all_and_unknown_rule_fails() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    assert keep_long_tail(labels, np.array([5, 5, 2]), "ltwb").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(InputError, match="ltwb, ldam"):
        keep_long_tail(labels, np.array([1, 1, 1]), "random")
