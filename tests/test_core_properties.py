"""Hypothesis properties of ``LogitStats``: merging, row order, pickling, threads."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FLOAT_DTYPES, assert_report_close, assert_reports_identical, long_tailed
from lort import _core
from lort.errors import InputError

RTOL = 1e-12
ATOL = 1e-12

SETTINGS = settings(max_examples=50, deadline=None)

dtypes = st.sampled_from(FLOAT_DTYPES)
modes = st.sampled_from(["bound", "exact", "none"])
seeds = st.integers(0, 2**32 - 1)


@st.composite
def datasets(draw, max_rows=300, max_classes=40):
    """(logits, labels, train_counts, hessian mode) of a long-tailed set."""
    k = draw(st.integers(1, max_classes))
    n = draw(st.integers(0, max_rows))
    dtype = draw(dtypes)
    logits, labels, counts = long_tailed(n, k, seed=draw(seeds), dtype=dtype)
    return logits, labels, counts, draw(modes)


def one_pass(logits, labels, hessian, *, threads=None):
    stats = _core.LogitStats(logits.shape[1], hessian=hessian, threads=threads)
    stats.update(logits, labels)
    return stats


def assert_close(a, b):
    assert_report_close(a, b, rtol=RTOL, atol=ATOL)


@SETTINGS
@given(data=datasets(), cuts=st.lists(st.floats(0, 1), max_size=5), reverse=st.booleans())
def test_merged_shards_equal_one_pass(data, cuts, reverse):
    logits, labels, counts, hessian = data
    n, k = logits.shape
    bounds = [0, *sorted(int(c * n) for c in cuts), n]
    shards = []
    for a, b in itertools.pairwise(bounds):
        s = _core.LogitStats(k, hessian=hessian)
        s.update(logits[a:b], labels[a:b])
        shards.append(s)
    if reverse:
        shards.reverse()
    total = shards[0]
    for s in shards[1:]:
        total.merge(s)
    assert total.rows == n
    assert_close(total.finalize(counts), one_pass(logits, labels, hessian).finalize(counts))


@SETTINGS
@given(data=datasets(), split=st.floats(0, 1))
def test_merge_is_symmetric(data, split):
    logits, labels, counts, hessian = data
    n = logits.shape[0]
    c = int(split * n)
    a, b = one_pass(logits[:c], labels[:c], hessian), one_pass(logits[c:], labels[c:], hessian)
    ab, ba = a.copy(), b.copy()
    ab.merge(b)
    ba.merge(a)
    assert_close(ab.finalize(counts), ba.finalize(counts))
    # merge leaves its argument alone
    assert_reports_identical(b.finalize(), one_pass(logits[c:], labels[c:], hessian).finalize())


@SETTINGS
@given(data=datasets(), seed=seeds)
def test_row_order_does_not_matter(data, seed):
    logits, labels, counts, hessian = data
    order = np.random.default_rng(seed).permutation(logits.shape[0])
    assert_close(
        one_pass(logits[order], labels[order], hessian).finalize(counts),
        one_pass(logits, labels, hessian).finalize(counts),
    )


@SETTINGS
@given(data=datasets(), more=datasets())
def test_pickle_round_trip_is_exact_and_keeps_accumulating(data, more):
    logits, labels, counts, hessian = data
    k = logits.shape[1]
    stats = one_pass(logits, labels, hessian)
    clone = pickle.loads(pickle.dumps(stats))
    assert type(clone) is _core.LogitStats
    assert (clone.num_classes, clone.rows, clone.omitted_rows) == (k, stats.rows, 0)
    assert (clone.hessian, clone.nan_policy) == (hessian, "raise")
    assert_reports_identical(clone.finalize(counts), stats.finalize(counts))

    # Both keep accumulating the same way (more rows over the same K).
    extra, extra_labels, _ = long_tailed(more[0].shape[0], k, seed=7, dtype=more[0].dtype)
    stats.update(extra, extra_labels)
    clone.update(extra, extra_labels)
    assert_reports_identical(clone.finalize(counts), stats.finalize(counts))
    assert clone.rows == logits.shape[0] + extra.shape[0]
    merged = one_pass(logits, labels, hessian)
    merged.merge(one_pass(extra, extra_labels, hessian))
    assert_close(clone.finalize(counts), merged.finalize(counts))


@SETTINGS
@given(data=datasets())
def test_copy_is_independent(data):
    logits, labels, counts, hessian = data
    stats = one_pass(logits, labels, hessian)
    before = stats.finalize(counts)
    dup = stats.copy()
    dup.update(logits, labels)
    assert dup.rows == 2 * stats.rows
    assert_reports_identical(stats.finalize(counts), before)


@SETTINGS
@given(
    k=st.integers(1, 30),
    other_k=st.integers(1, 30),
    mode=modes,
    other_mode=modes,
    seed=seeds,
)
def test_merging_incompatible_accumulators_raises(k, other_k, mode, other_mode, seed):
    logits, labels, _ = long_tailed(50, k, seed=seed)
    stats = one_pass(logits, labels, mode)
    state = pickle.dumps(stats)
    other = one_pass(*long_tailed(20, other_k, seed=seed)[:2], other_mode)
    if k == other_k and mode == other_mode:
        stats.merge(other)
        assert stats.rows == 70
        return
    with pytest.raises(InputError) as info:
        stats.merge(other)
    message = str(info.value)
    if k != other_k:
        assert str(k) in message and str(other_k) in message and "classes" in message
    else:
        assert mode in message and other_mode in message
    # the failed merge changed nothing
    assert pickle.dumps(stats) == state


@SETTINGS
@given(
    k=st.integers(1, 300),
    n=st.integers(0, 2500),
    dtype=dtypes,
    hessian=modes,
    seed=seeds,
)
def test_one_thread_and_two_threads_agree(k, n, dtype, hessian, seed):
    # Up to 2500 x 300 values: several streaming blocks for the larger draws.
    logits, labels, counts = long_tailed(n, k, seed=seed, dtype=dtype)
    assert_close(
        one_pass(logits, labels, hessian, threads=1).finalize(counts),
        one_pass(logits, labels, hessian, threads=2).finalize(counts),
    )
