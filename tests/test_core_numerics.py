"""``LogitStats.finalize()`` against the float64 reference in tests/reference.py."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import (
    FLOAT_DTYPES,
    LABEL_DTYPES,
    assert_hessian_close,
    assert_report_close,
    long_tailed,
    train_counts_for,
)
from lort import _core
from lort.analysis import analyze, coerce_logits
from reference import reference

RTOL = 1e-9
ATOL = 1e-12


def conf_rtol(dtype) -> float:
    """NLL and ECE use a single-precision exp for float16/float32 input."""
    return RTOL if np.dtype(dtype) == np.float64 else 1e-6


def run(logits, labels, train_counts=None, *, hessian="bound", threads=None):
    stats = _core.LogitStats(logits.shape[1], hessian=hessian, threads=threads)
    stats.update(logits, labels)
    return stats.finalize(train_counts)


def check(logits, labels, train_counts=None, *, hessian="bound", threads=None):
    got = run(logits, labels, train_counts, hessian=hessian, threads=threads)
    want = reference(logits, labels, train_counts)
    assert_report_close(got, want, rtol=RTOL, atol=ATOL, conf_rtol=conf_rtol(logits.dtype))
    return got, want


def test_module_constants():
    assert _core.ECE_BINS == 15
    assert _core.EXACT_MAX_CLASSES == 16_384


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("hessian", ["bound", "exact"])
def test_long_tailed_matches_reference(dtype, hessian):
    logits, labels, counts = long_tailed(2000, 24, seed=1, dtype=dtype)
    got, _ = check(logits, labels, counts, hessian=hessian)
    assert got["hessian"]["mode"] == hessian
    assert got["overall"]["rows"] == 2000
    # The long tail leaves every group populated.
    assert all(got["groups"][g] is not None for g in ("many", "medium", "few"))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_many_blocks_and_threads_match_reference(dtype):
    # 40 000 x 40 values: several streaming blocks for every dtype, two workers.
    logits, labels, counts = long_tailed(40_000, 40, seed=2, dtype=dtype)
    check(logits, labels, counts, threads=2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("hessian", ["bound", "exact"])
def test_large_offset_small_spread(dtype, hessian):
    # Logits near 1e3 that differ by ~1e-2: moments must not cancel catastrophically.
    logits, labels, counts = long_tailed(3000, 10, seed=3, dtype=dtype, offset=1e3, spread=1e-2)
    got, want = check(logits, labels, counts, hessian=hessian)
    mag = got["per_class"]["magnitude"]
    assert np.nanmax(np.abs(mag)) < 0.1  # the test really is about tiny magnitudes
    assert np.isfinite(want["per_class"]["rstd"][:3]).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_single_class(dtype):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(50, 1)).astype(dtype)
    labels = np.zeros(50, dtype=np.int64)
    got, _ = check(logits, labels, np.array([7]), hessian="exact")
    pc = got["per_class"]
    assert pc["neg_count"][0] == 0
    assert np.isnan(pc["neg_mean"][0]) and np.isnan(pc["magnitude"][0])
    assert np.isnan(pc["rstd"][0])
    assert pc["accuracy"][0] == 1.0
    assert got["overall"]["nll"] == pytest.approx(0.0, abs=1e-12)
    assert got["overall"]["ece"] == pytest.approx(0.0, abs=1e-12)
    assert got["groups"]["few"]["classes"] == 1
    assert got["groups"]["many"] is None and got["groups"]["medium"] is None
    assert got["groups"]["few"]["mean_magnitude"] is None  # L is NaN for the only class


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_two_classes(dtype):
    logits, labels, _ = long_tailed(300, 2, seed=5, dtype=dtype)
    got, _ = check(logits, labels, np.array([150, 50]), hessian="exact")
    assert got["groups"]["few"] is None
    assert got["groups"]["many"]["classes"] == 1 and got["groups"]["medium"]["classes"] == 1


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_class_without_positives_and_with_one(dtype):
    rng = np.random.default_rng(6)
    k = 6
    labels = rng.choice([0, 1, 2, 4], size=200)  # class 3 and 5: no positives
    labels[17] = 5  # ... class 5 has exactly one
    logits = rng.normal(size=(200, k)).astype(dtype)
    logits[np.arange(200), labels] += 1.5
    counts = np.array([300, 100, 50, 19, 20, 0])
    got, want = check(logits, labels, counts)
    pc = got["per_class"]
    assert pc["pos_count"][3] == 0 and pc["neg_count"][3] == 200
    for name in ("pos_mean", "pos_std", "magnitude", "rstd", "rstd_neg", "rstd_all", "accuracy"):
        assert np.isnan(pc[name][3]), name
    for name in ("neg_mean", "neg_std", "std"):
        assert np.isfinite(pc[name][3]), name
    assert pc["pos_count"][5] == 1
    assert pc["pos_std"][5] == 0.0 and pc["rstd"][5] == 0.0
    assert pc["pos_mean"][5] == float(logits[17, 5])
    # balanced accuracy averages the classes that have positives only
    acc = want["per_class"]["accuracy"]
    assert got["overall"]["balanced_accuracy"] == pytest.approx(np.nanmean(acc), rel=1e-12)
    # medium = {1 (100), 2 (50), 4 (20)}; few = {3 (19), 5 (0)}: few's accuracy is class 5's
    assert got["groups"]["medium"]["classes"] == 3
    assert got["groups"]["few"]["classes"] == 2
    assert got["groups"]["few"]["accuracy"] == pc["accuracy"][5]


def test_group_without_any_test_rows_has_none_values():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(30, 3))
    labels = rng.choice([0, 1], size=30)
    got, _ = check(logits, labels, np.array([500, 500, 3]))
    few = got["groups"]["few"]
    assert few == {"classes": 1, "accuracy": None, "mean_magnitude": None, "mean_rstd": None}


@pytest.mark.parametrize("k", [1, 3, 8, 9, 16, 17, 33])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_argmax_ties_first_maximum_wins(k, dtype):
    rng = np.random.default_rng(k)
    n = 400
    logits = rng.integers(0, 3, size=(n, k)).astype(dtype)  # ties everywhere
    logits[:20] = 1.0  # all-equal rows: class 0 is predicted
    labels = rng.integers(0, k, size=n)
    got, _ = check(logits, labels, hessian="exact")
    np.testing.assert_array_equal(
        got["per_class"]["predicted_count"], np.bincount(logits.argmax(axis=1), minlength=k)
    )


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_all_equal_rows(dtype):
    k = 5
    logits = np.full((10, k), 0.25, dtype=dtype)
    labels = np.arange(10) % k
    got, _ = check(logits, labels, hessian="exact")
    np.testing.assert_array_equal(got["per_class"]["predicted_count"], [10, 0, 0, 0, 0])
    np.testing.assert_array_equal(got["per_class"]["accuracy"], [1, 0, 0, 0, 0])
    assert got["overall"]["accuracy"] == pytest.approx(0.2, rel=1e-15)
    assert got["overall"]["nll"] == pytest.approx(np.log(k), rel=1e-6)
    # confidence 1/5 = 3/15 falls in bin 2, (2/15, 3/15]
    assert list(got["ece_bins"]["count"]) == [0, 0, 10] + [0] * 12


def test_float16_input_matches_reference_on_its_values():
    logits, labels, counts = long_tailed(1500, 20, seed=8, dtype=np.float16)
    assert logits.dtype == np.float16
    check(logits, labels, counts, hessian="exact")


@pytest.mark.parametrize("label_dtype", LABEL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_integer_label_dtype(label_dtype, dataset):
    logits, labels, counts = dataset
    base = run(logits, labels, counts)
    got = run(logits, labels.astype(label_dtype), counts)
    assert_report_close(got, base, rtol=0, atol=0)
    assert_report_close(got, reference(logits, labels, counts), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, ::2],
        lambda a: a[::3],
        lambda a: np.asfortranarray(a),
        lambda a: a.T.copy().T,
        lambda a: a.astype(a.dtype.newbyteorder(">")),
        lambda a: a.tolist(),
    ],
    ids=["column-stride", "row-stride", "fortran", "transposed", "big-endian", "list"],
)
def test_non_contiguous_input_through_coerce_logits(view):
    rng = np.random.default_rng(10)
    base = rng.normal(size=(300, 16)).astype(np.float32)
    logits = view(base)
    dense = np.array(logits, dtype=np.float32)
    labels = (dense.argmax(axis=1) + np.arange(dense.shape[0])) % dense.shape[1]
    coerced = coerce_logits(logits)
    assert coerced.flags.c_contiguous and coerced.dtype.isnative
    got, _ = check(coerced, labels)
    # the facade does the same coercion
    facade = analyze(logits, labels)
    np.testing.assert_allclose(facade.per_class["rstd"], got["per_class"]["rstd"], rtol=0)


@pytest.mark.parametrize("k", [2, 3, 7, 16, 50])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: np.dtype(d).name)
def test_exact_hessian_matches_eigvalsh(k, dtype):
    logits, labels, _ = long_tailed(700, k, seed=k, dtype=dtype, spread=3.0)
    got = run(logits, labels, hessian="exact", threads=2)
    h = got["hessian"]
    want = reference(logits, labels)["hessian"]
    assert h["mode"] == "exact"
    assert_hessian_close(h, want, rtol=conf_rtol(dtype))
    # lambda_min of H is 0 in exact arithmetic (H 1 = 0): both sides find it to rounding
    assert abs(h["lambda_min"]) <= 1e-12
    assert abs(want["lambda_min"]) <= 1e-12
    assert h["scale"] > 0


def test_exact_and_bound_agree_on_scale():
    logits, labels, _ = long_tailed(900, 30, seed=11)
    exact = run(logits, labels, hessian="exact")["hessian"]
    bound = run(logits, labels, hessian="bound")["hessian"]
    assert bound["mode"] == "bound"
    np.testing.assert_allclose(bound["scale"], exact["scale"], rtol=1e-9)
    assert bound["lambda_min"] <= exact["lambda_min"] + exact["tolerance"]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bound_mode_psd_on_random_data(seed, dtype):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 200))
    logits = (rng.normal(size=(500, k)) * rng.uniform(0.1, 10)).astype(dtype)
    labels = rng.integers(0, k, size=500)
    h = run(logits, labels, hessian="bound")["hessian"]
    assert h["mode"] == "bound"
    assert h["psd"] is True
    assert -h["tolerance"] <= h["lambda_min"] <= 1e-12
    want = reference(logits, labels)["hessian"]
    np.testing.assert_allclose(h["scale"], want["scale"], rtol=conf_rtol(dtype))


@pytest.mark.parametrize("margin", [10.0, 20.0, 30.0])
@pytest.mark.parametrize("hessian", ["bound", "exact"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: np.dtype(d).name)
def test_psd_verdict_on_confident_predictions(margin, hessian, dtype):
    # A classifier that is right by a wide margin (a trained net on its training set):
    # H is PSD for every input (Proposition 1), so the verdict must stay True even
    # when the diagonal of H, the scale of the tolerance, is tiny.
    rng = np.random.default_rng(int(margin))
    n, k = 300, 10
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += margin
    logits = logits.astype(dtype)
    h = run(logits, labels, hessian=hessian)["hessian"]
    want = reference(logits, labels)["hessian"]
    np.testing.assert_allclose(h["scale"], want["scale"], rtol=1e-5)
    assert h["psd"] is True, h


@pytest.mark.parametrize("hessian", ["bound", "exact"])
@pytest.mark.parametrize("k", [2, 3, 24])
def test_psd_verdict_on_long_tailed_logits(hessian, k):
    # The head-favouring bias of a long-tailed classifier makes many rows confident.
    logits, labels, _ = long_tailed(300, k, seed=5)
    h = run(logits, labels, hessian=hessian)["hessian"]
    assert h["psd"] is True, h


def test_hessian_none_gives_none(dataset):
    logits, labels, counts = dataset
    stats = _core.LogitStats(12, hessian="none")
    assert stats.hessian == "none"
    stats.update(logits, labels)
    got = stats.finalize(counts)
    assert got["hessian"] is None
    assert_report_close(got, reference(logits, labels, counts), hessian=False)


def test_no_rows():
    stats = _core.LogitStats(4, hessian="exact")
    stats.update(np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
    got = stats.finalize(train_counts_for(4))
    want = reference(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), train_counts_for(4))
    assert_report_close(got, want)
    assert got["overall"]["accuracy"] is None and got["hessian"] is None


def test_train_counts_and_groups_boundaries():
    # 101 is many, 100 and 20 are medium, 19 and 0 are few
    counts = np.array([101, 100, 20, 19, 0])
    logits, labels, _ = long_tailed(800, 5, seed=13)
    got, _ = check(logits, labels, counts)
    assert got["groups"]["many"]["classes"] == 1
    assert got["groups"]["medium"]["classes"] == 2
    assert got["groups"]["few"]["classes"] == 2
    np.testing.assert_array_equal(got["per_class"]["train_count"], counts)


def test_updates_accumulate():
    logits, labels, counts = long_tailed(1200, 15, seed=14)
    stats = _core.LogitStats(15, hessian="exact")
    for a, b in [(0, 1), (1, 500), (500, 500), (500, 1200)]:
        stats.update(logits[a:b], labels[a:b])
    assert stats.rows == 1200
    assert_report_close(stats.finalize(counts), reference(logits, labels, counts))


# ----------------------------------------------------------------------------------
# The NLL (log-sum-exp) at the edges of each dtype, row by row against numpy in float64
# and an exact reference (mpmath at 40 digits).


def edge_rows(dtype, k: int = 19, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows with tied maxima, values of both signs near the dtype's largest, huge offsets
    with a small spread, and labels on the maxima and off them."""
    big = float(np.finfo(dtype).max) / 3  # big - (-big) still fits the dtype
    rng = np.random.default_rng(seed)
    nmant = np.finfo(dtype).nmant
    offset = 2.0 ** (nmant - 3)  # integers up to 8 apart stay exact at this offset
    rows = [
        np.full(k, big),
        np.r_[big, big, np.full(k - 2, -big)],
        np.r_[np.full(3, -big), np.full(k - 3, -big / 2)],
        rng.choice([-big, big], k),
        rng.choice([-big, big], k),
        np.r_[big, np.nextafter(dtype(big), dtype(0)), np.zeros(k - 2)],
        offset + rng.integers(0, 8, k),
        -offset - rng.integers(0, 8, k),
        np.r_[offset, offset, np.zeros(k - 2)],
    ]
    z = np.array(rows).astype(dtype)
    on_max = [int(rng.choice(np.flatnonzero(r == r.max()))) for r in z]
    elsewhere = list(rng.integers(0, k, len(z)))
    return np.concatenate([z, z]), np.array(on_max + elsewhere)


def numpy_nll(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(axis=1)
    return (m - z[np.arange(len(z)), y]) + np.log(np.exp(z - m[:, None]).sum(axis=1))


def exact_nll(row: np.ndarray, y: int) -> float:
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(40):
        z = [mpmath.mpf(float(v)) for v in row]
        m = max(z)
        return float((m - z[y]) + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in z)))


def core_nll(z: np.ndarray, y: np.ndarray, hessian: str = "bound") -> float:
    return run(z, y, hessian=hessian)["overall"]["nll"]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("hessian", ["bound", "exact", "none"])
def test_nll_at_the_edges_matches_numpy_and_exact_row_by_row(dtype, hessian):
    z, y = edge_rows(dtype)
    tol = conf_rtol(dtype) if dtype != np.float64 else 1e-13
    want_np = numpy_nll(z, y)
    for i in range(len(z)):
        want = exact_nll(z[i], int(y[i]))
        got = core_nll(z[i : i + 1], y[i : i + 1], hessian)
        scale = max(1.0, abs(want))
        assert abs(want_np[i] - want) <= 1e-15 * scale  # the reference itself
        assert abs(got - want) <= tol * scale, (i, z[i], y[i], got, want)
    # All rows in one pass (groups of 8 rows): the mean, and in float64 the mean of the
    # rows whose NLL is O(1), as the sum of all of them overflows (reported as None).
    if dtype == np.float64:
        assert core_nll(z, y, hessian) is None
        z, y, want_np = z[: len(z) // 2], y[: len(y) // 2], want_np[: len(z) // 2]
    assert core_nll(z, y, hessian) == pytest.approx(want_np.mean(), rel=tol)


def test_nll_of_tied_maxima_at_1e20_is_ln2():
    z = np.array([[1e20, 1e20]])
    assert core_nll(z, np.array([0])) == pytest.approx(np.log(2), rel=1e-15)
    z = np.array([[1e20, 1e20, -1e20, 1e20]])
    assert core_nll(z, np.array([3])) == pytest.approx(np.log(3), rel=1e-15)


def test_nll_of_rows_of_plus_minus_1e38_float32():
    rng = np.random.default_rng(3)
    z = rng.choice(np.array([-1e38, 1e38], np.float32), (64, 8))
    z[:, 0] = 1e38  # every row has a maximum
    y = np.array([rng.choice(np.flatnonzero(r == r.max())) for r in z])
    want = numpy_nll(z, y)
    assert want.min() >= 0 and want.max() == pytest.approx(np.log(8))
    assert core_nll(z, y) == pytest.approx(want.mean(), rel=1e-6)
