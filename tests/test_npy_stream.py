"""Streaming ``.npy`` files: ``analyze_npy``, ``update_npy`` and sharded ``analyze``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import assert_report_close, long_tailed, save_npy
from lort import _core
from lort.analysis import Analysis, analyze
from lort.errors import InputError
from reference import reference

FILE_DTYPES = ["<f2", "<f4", "<f8"]


def conf_rtol(dtype) -> float:
    return 1e-9 if np.dtype(dtype) == np.float64 else 1e-6


def in_memory(logits, labels, counts=None, **kw):
    stats = _core.LogitStats(logits.shape[1], **kw)
    stats.update(logits, labels)
    return stats.finalize(counts)


@pytest.mark.parametrize("dtype", FILE_DTYPES)
@pytest.mark.parametrize("hessian", ["bound", "exact", "none"])
def test_analyze_npy_matches_update_and_reference(dtype, hessian, tmp_path):
    logits, labels, counts = long_tailed(3000, 20, seed=1, dtype=dtype)
    path = save_npy(tmp_path, "logits.npy", logits)
    assert _core.npy_header(path) == (np.dtype(dtype).name, 3000, 20)

    stats = _core.analyze_npy(path, labels, hessian=hessian, threads=1)
    assert (stats.num_classes, stats.rows, stats.hessian) == (20, 3000, hessian)
    got = stats.finalize(counts)
    # same kernel, same blocks, one thread: identical to the in-memory pass
    memory = in_memory(logits, labels, counts, hessian=hessian, threads=1)
    assert_report_close(got, memory, rtol=0, atol=0)

    want = reference(logits, labels, counts)
    if hessian == "none":
        want["hessian"] = None
    assert_report_close(got, want, rtol=1e-9, conf_rtol=conf_rtol(dtype))


@pytest.mark.parametrize("dtype", FILE_DTYPES)
def test_update_npy_accumulates_with_update(dtype, tmp_path):
    logits, labels, counts = long_tailed(2000, 12, seed=2, dtype=dtype)
    path = save_npy(tmp_path, "part.npy", logits[700:])
    stats = _core.LogitStats(12, hessian="exact")
    stats.update(logits[:700], labels[:700])
    stats.update_npy(path, labels[700:])
    stats.update_npy(str(path), labels[700:])  # str paths work too
    assert stats.rows == 3300
    both = np.concatenate([logits, logits[700:]])
    both_labels = np.concatenate([labels, labels[700:]])
    assert_report_close(
        stats.finalize(counts), reference(both, both_labels, counts), conf_rtol=conf_rtol(dtype)
    )


def test_file_larger_than_one_block(tmp_path):
    # 3000 x 1000 float32 = 12 MB: many 512 KiB streaming blocks, two threads.
    rng = np.random.default_rng(3)
    n, k = 3000, 1000
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)).astype(np.float32)
    logits[np.arange(n), labels] += 3.0
    counts = rng.integers(0, 300, size=k)
    path = save_npy(tmp_path, "big.npy", logits)
    assert path.stat().st_size > 12_000_000

    calls = []
    stats = _core.analyze_npy(path, labels, threads=2, progress=calls.append)
    assert calls and calls[-1] == n
    assert calls == sorted(calls)
    got = stats.finalize(counts)
    assert_report_close(
        got, reference(logits, labels, counts, hessian=False), hessian=False, conf_rtol=1e-6
    )
    h = got["hessian"]
    assert h["mode"] == "bound" and h["psd"] is True

    memory = in_memory(logits, labels, counts, threads=2)
    assert_report_close(got, memory, rtol=1e-12, conf_rtol=1e-12)


@pytest.mark.parametrize("dtype", FILE_DTYPES)
def test_shards_equal_one_file(dtype, tmp_path):
    logits, labels, counts = long_tailed(2500, 16, seed=4, dtype=dtype)
    whole = save_npy(tmp_path, "whole.npy", logits)
    cuts = [0, 1, 900, 900, 2000, 2500]  # includes an empty and a one-row shard
    shards = [
        save_npy(tmp_path, f"shard{i}.npy", logits[a:b])
        for i, (a, b) in enumerate(itertools.pairwise(cuts))
    ]
    one = analyze(whole, labels, train_counts=counts, hessian="exact")
    many = analyze(shards, labels, train_counts=counts, hessian="exact")
    assert isinstance(many, Analysis)
    assert many.rows == one.rows == 2500
    assert_report_close(as_report(many), as_report(one), rtol=1e-12, conf_rtol=1e-12)
    assert_report_close(
        as_report(many), reference(logits, labels, counts), conf_rtol=conf_rtol(dtype)
    )
    # a list of str paths, and labels from a file, work the same way
    label_path = save_npy(tmp_path, "labels.npy", labels)
    again = analyze([str(p) for p in shards], label_path, train_counts=counts, hessian="exact")
    assert_report_close(as_report(again), as_report(many), rtol=0, atol=0)


def as_report(a: Analysis) -> dict:
    """An Analysis back in finalize()'s dict shape."""
    return {
        "num_classes": a.num_classes,
        "per_class": a.per_class,
        "overall": {
            "rows": a.rows,
            "omitted_rows": a.omitted_rows,
            "accuracy": a.accuracy,
            "balanced_accuracy": a.balanced_accuracy,
            "nll": a.nll,
            "ece": a.ece,
        },
        "groups": None
        if a.groups is None
        else {k: None if g is None else dict(g.__dict__) for k, g in a.groups.items()},
        "hessian": None if a.hessian is None else dict(a.hessian.__dict__),
        "ece_bins": a.ece_bins,
    }


@pytest.mark.parametrize("n", [10, 50_000])
def test_progress_reaches_row_count(n, tmp_path):
    logits, labels, _ = long_tailed(n, 40, seed=5, dtype=np.float32)
    path = save_npy(tmp_path, "p.npy", logits)

    calls: list[int] = []
    _core.analyze_npy(path, labels, progress=calls.append)
    assert calls[-1] == n and calls == sorted(calls)

    calls.clear()
    stats = _core.LogitStats(40)
    stats.update_npy(path, labels, progress=calls.append)
    assert calls[-1] == n

    calls.clear()
    stats.update(logits, labels, progress=calls.append)
    assert calls[-1] == n
    assert stats.rows == 2 * n


def test_progress_over_shards_counts_all_rows(tmp_path):
    logits, labels, _ = long_tailed(3000, 8, seed=6, dtype=np.float32)
    paths = [save_npy(tmp_path, f"s{i}.npy", part) for i, part in enumerate(np.split(logits, 3))]
    calls: list[int] = []
    analyze(paths, labels, progress=calls.append)
    assert calls[-1] == 3000
    assert calls == sorted(calls)


@pytest.mark.parametrize("when", ["first", "final"])
@pytest.mark.parametrize("n", [100, 100_000])
@pytest.mark.parametrize("source", ["memory", "file"])
def test_progress_exception_cancels_the_update(source, n, when, tmp_path):
    # An exception from the callback propagates, and like any failed update it
    # leaves the accumulator unchanged, whether it comes mid-pass or at the end.
    logits, labels, _ = long_tailed(n, 50, seed=7, dtype=np.float32)
    path = save_npy(tmp_path, "e.npy", logits)

    class Stop(Exception):
        pass

    calls: list[int] = []

    def progress(done):
        calls.append(done)
        if when == "first" or done == n:
            raise Stop(done)

    stats = _core.LogitStats(50, threads=1)
    with pytest.raises(Stop):
        if source == "memory":
            stats.update(logits, labels, progress=progress)
        else:
            stats.update_npy(path, labels, progress=progress)
    assert calls, "the callback was never called"
    assert stats.rows == 0, f"progress calls {calls}; rows counted despite the exception"


def test_lort_num_threads_is_honoured(tmp_path, monkeypatch):
    logits, labels, counts = long_tailed(20_000, 30, seed=8, dtype=np.float32)
    path = save_npy(tmp_path, "t.npy", logits)
    single = _core.analyze_npy(path, labels, threads=1).finalize(counts)

    monkeypatch.setenv("LORT_NUM_THREADS", "1")
    assert_report_close(_core.analyze_npy(path, labels).finalize(counts), single, rtol=0, atol=0)

    for bad in ["zero", "0", "-2", "1.5", ""]:
        monkeypatch.setenv("LORT_NUM_THREADS", bad)
        with pytest.raises(InputError, match="LORT_NUM_THREADS"):
            _core.analyze_npy(path, labels)
        with pytest.raises(InputError, match="LORT_NUM_THREADS"):
            _core.LogitStats(30)
        with pytest.raises(InputError, match="LORT_NUM_THREADS"):
            analyze(path, labels)
        # an explicit thread count does not consult the variable
        explicit = _core.analyze_npy(path, labels, threads=1).finalize(counts)
        assert_report_close(explicit, single, rtol=0, atol=0)

    monkeypatch.setenv("LORT_NUM_THREADS", " 2 ")
    two = _core.analyze_npy(path, labels).finalize(counts)
    assert_report_close(two, single, rtol=1e-12, conf_rtol=1e-12)
