"""Every bad input raises the right class of ``lort.errors`` with a useful message."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_report_close, long_tailed, save_npy
from lort import _core
from lort.analysis import analyze, coerce_labels, coerce_logits
from lort.errors import (
    FileReadError,
    InputError,
    LabelError,
    LortError,
    NonFiniteError,
    NpyFormatError,
    TruncatedFileError,
)
from reference import reference


def stats_with_data(k=4, hessian="bound", **kw):
    logits, labels, _ = long_tailed(100, k, seed=0)
    stats = _core.LogitStats(k, hessian=hessian, **kw)
    stats.update(logits, labels)
    return stats


def raises_exactly(cls, match=None):
    """pytest.raises that rejects subclasses (e.g. TruncatedFileError for NpyFormatError)."""

    class _Exact:
        def __enter__(self):
            self._ctx = pytest.raises(cls, match=match)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self._ctx.__exit__(*exc)
            assert type(self.info.value) is cls, f"{type(self.info.value).__name__}: {self.info}"
            return suppressed

    return _Exact()


def test_hierarchy():
    assert issubclass(LabelError, InputError) and issubclass(InputError, ValueError)
    assert issubclass(NonFiniteError, InputError)
    assert issubclass(TruncatedFileError, NpyFormatError)
    assert issubclass(FileReadError, OSError) and issubclass(FileReadError, LortError)


# ----------------------------------------------------------------------------------
# Labels


def test_label_outside_range_names_row():
    stats = _core.LogitStats(3)
    labels = np.array([0, 1, 2, 1, 3, 0, 7])
    with raises_exactly(LabelError, match=r"label 3 at row 4 .*\[0, 3\)"):
        stats.update(np.zeros((7, 3)), labels)


def test_negative_label_names_row():
    stats = _core.LogitStats(3)
    with raises_exactly(LabelError, match=r"label -1 at row 2\b"):
        stats.update(np.zeros((4, 3)), np.array([0, 1, -1, -5], dtype=np.int8))


def test_huge_unsigned_label():
    stats = _core.LogitStats(3)
    with raises_exactly(LabelError, match=r"label 18446744073709551615 at row 1\b"):
        stats.update(np.zeros((2, 3)), np.array([0, 2**64 - 1], dtype=np.uint64))


def test_length_mismatch():
    stats = _core.LogitStats(3)
    with raises_exactly(LabelError, match=r"5 rows but 4 labels"):
        stats.update(np.zeros((5, 3)), np.zeros(4, dtype=np.int64))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.bool_, np.complex64])
def test_non_integer_labels(dtype):
    stats = _core.LogitStats(3)
    with raises_exactly(LabelError, match="integers"):
        stats.update(np.zeros((3, 3)), np.zeros(3, dtype=dtype))
    with raises_exactly(LabelError, match="integers"):
        coerce_labels(np.zeros(3, dtype=dtype))


def test_two_dimensional_labels():
    stats = _core.LogitStats(3)
    with raises_exactly(LabelError, match="1-D"):
        stats.update(np.zeros((3, 3)), np.zeros((3, 1), dtype=np.int64))
    with raises_exactly(LabelError, match="1-D"):
        coerce_labels(np.zeros((3, 1), dtype=np.int64))


def test_non_contiguous_labels():
    stats = _core.LogitStats(3)
    with raises_exactly(LabelError, match="contiguous"):
        stats.update(np.zeros((3, 3)), np.zeros(6, dtype=np.int64)[::2])


# ----------------------------------------------------------------------------------
# Non-finite logits


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_names_row(dtype, bad):
    logits, labels, _ = long_tailed(50, 5, seed=1, dtype=dtype)
    logits[13, 4] = bad
    with raises_exactly(NonFiniteError, match=r"\brow 13\b"):
        _core.LogitStats(5).update(logits, labels)


@pytest.mark.parametrize(
    "bad_rows",
    [
        [150_000, 5],
        [199_999, 150_000],
        [16_384, 16_383],  # either side of a float32 block boundary (K = 8)
        [199_999],
        [190_000, 60_001, 60_000, 100_000],
    ],
    ids=str,
)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("hessian", ["bound", "exact"])
def test_first_bad_row_is_named_across_threads(bad_rows, dtype, hessian, big_logits):
    logits, labels = big_logits
    logits = logits.astype(dtype)
    for i, row in enumerate(bad_rows):
        logits[row, (3 * i) % 8] = (np.nan, np.inf, -np.inf)[i % 3]
    stats = _core.LogitStats(8, hessian=hessian, threads=2)
    with raises_exactly(NonFiniteError) as info:
        stats.update(logits, labels)
    assert re.search(rf"\brow {min(bad_rows)}\b", str(info.value)), str(info.value)
    assert "nan_policy='omit'" in str(info.value)
    assert stats.rows == 0


@pytest.fixture(scope="module")
def big_logits():
    rng = np.random.default_rng(2)
    n, k = 200_000, 8
    return rng.normal(size=(n, k)).astype(np.float32), rng.integers(0, k, size=n)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("hessian", ["bound", "exact", "none"])
@pytest.mark.parametrize("n", [300, 30_000])
def test_nan_policy_omit_skips_and_counts(dtype, hessian, n):
    logits, labels, counts = long_tailed(n, 10, seed=3, dtype=dtype)
    rng = np.random.default_rng(4)
    bad = rng.choice(n, size=n // 10, replace=False)
    bad = np.union1d(bad, [0, n - 1, n // 2])  # the first, last and a middle row as well
    for i, row in enumerate(bad):
        logits[row, i % 10] = (np.nan, np.inf, -np.inf)[i % 3]
    keep = np.ones(n, dtype=bool)
    keep[bad] = False

    stats = _core.LogitStats(10, hessian=hessian, nan_policy="omit", threads=2)
    assert stats.nan_policy == "omit"
    stats.update(logits, labels)
    assert stats.omitted_rows == n - keep.sum()
    assert stats.rows == keep.sum()
    got = stats.finalize(counts)
    want = reference(logits[keep], labels[keep], counts)
    want["overall"]["omitted_rows"] = int(n - keep.sum())
    if hessian == "none":
        want["hessian"] = None
    rtol = 1e-9 if dtype == np.float64 else 1e-6
    assert_report_close(got, want, rtol=1e-9, conf_rtol=rtol)


def test_nan_policy_omit_all_rows():
    stats = _core.LogitStats(3, nan_policy="omit")
    stats.update(np.full((4, 3), np.nan), np.zeros(4, dtype=np.int64))
    out = stats.finalize()
    assert (stats.rows, stats.omitted_rows) == (0, 4)
    assert out["overall"]["omitted_rows"] == 4
    assert out["overall"]["accuracy"] is None and out["hessian"] is None


# ----------------------------------------------------------------------------------
# Logits arrays and options


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.complex64, np.complex128])
def test_wrong_logits_dtype(dtype):
    logits = np.zeros((3, 3), dtype=dtype)
    with raises_exactly(InputError, match=rf"float16, float32 or float64.*{np.dtype(dtype).name}"):
        _core.LogitStats(3).update(logits, np.zeros(3, dtype=np.int64))
    with raises_exactly(InputError, match=np.dtype(dtype).name):
        coerce_logits(logits)


@pytest.mark.parametrize("shape", [(6,), (2, 3, 3), ()])
def test_wrong_logits_ndim(shape):
    logits = np.zeros(shape)
    with raises_exactly(InputError, match=rf"2-D.*{len(shape)}-D"):
        _core.LogitStats(3).update(logits, np.zeros(2, dtype=np.int64))
    with raises_exactly(InputError, match="2-D"):
        coerce_logits(logits)


def test_wrong_number_of_columns():
    with raises_exactly(InputError, match="4 columns .* 3 classes"):
        _core.LogitStats(3).update(np.zeros((2, 4)), np.zeros(2, dtype=np.int64))


def test_strided_logits_straight_to_core_is_an_error():
    logits = np.zeros((6, 6))[:, ::2]
    with raises_exactly(InputError, match="C-contiguous"):
        _core.LogitStats(3).update(logits, np.zeros(6, dtype=np.int64))


def test_fortran_logits_straight_to_core_is_an_error():
    logits, labels, _ = long_tailed(60, 5, seed=5)
    fortran = np.asfortranarray(logits)
    assert not fortran.flags.c_contiguous
    stats = _core.LogitStats(5)
    with raises_exactly(InputError, match="C-contiguous"):
        stats.update(fortran, labels)


def test_fortran_logits_through_coerce_logits_work():
    logits, labels, _ = long_tailed(60, 5, seed=5)
    stats = _core.LogitStats(5)
    stats.update(coerce_logits(np.asfortranarray(logits)), labels)
    assert_report_close(stats.finalize(), reference(logits, labels))
    # the facade coerces too
    facade = analyze(np.asfortranarray(logits), labels)
    np.testing.assert_allclose(
        facade.per_class["pos_mean"], reference(logits, labels)["per_class"]["pos_mean"]
    )


def test_num_classes_zero():
    with raises_exactly(InputError, match="num_classes must be at least 1"):
        _core.LogitStats(0)


def test_exact_hessian_class_limit():
    _core.LogitStats(_core.EXACT_MAX_CLASSES, hessian="exact")  # the limit itself is fine
    assert _core.EXACT_MAX_CLASSES >= 8192  # iNaturalist 2018's 8,142 classes fit
    over = _core.EXACT_MAX_CLASSES + 1
    with raises_exactly(InputError, match=rf"K <= {over - 1}.*K = {over}"):
        _core.LogitStats(over, hessian="exact")
    _core.LogitStats(over, hessian="bound")


@pytest.mark.parametrize("value", ["full", "Bound", "", "exact "])
def test_bad_hessian_string(value):
    with raises_exactly(InputError, match=re.escape(f"hessian={value!r}".replace("'", '"'))):
        _core.LogitStats(3, hessian=value)


@pytest.mark.parametrize("value", ["ignore", "Omit", ""])
def test_bad_nan_policy_string(value):
    with raises_exactly(InputError, match=re.escape(f'nan_policy="{value}"')):
        _core.LogitStats(3, nan_policy=value)


def test_bad_options_in_analyze_npy(tmp_path):
    path = save_npy(tmp_path, "z.npy", np.zeros((2, 3), dtype=np.float32))
    labels = np.zeros(2, dtype=np.int64)
    with raises_exactly(InputError, match="hessian"):
        _core.analyze_npy(path, labels, hessian="nope")
    with raises_exactly(InputError, match="nan_policy"):
        _core.analyze_npy(path, labels, nan_policy="nope")
    with raises_exactly(InputError, match="threads"):
        _core.analyze_npy(path, labels, threads=0)


def test_threads_zero():
    with raises_exactly(InputError, match="threads must be at least 1"):
        _core.LogitStats(3, threads=0)


def test_bad_train_counts():
    stats = stats_with_data(k=4)
    with raises_exactly(InputError, match="3 entries .* 4 classes"):
        stats.finalize(np.array([1, 2, 3]))
    with raises_exactly(InputError, match="non-negative.*-2"):
        stats.finalize(np.array([1, -2, 3, 4]))


def test_merge_with_itself_doubles_the_data():
    stats = stats_with_data()
    before = stats.finalize()
    stats.merge(stats)
    after = stats.finalize()
    assert after["overall"]["rows"] == 2 * before["overall"]["rows"]
    np.testing.assert_allclose(
        after["per_class"]["magnitude"], before["per_class"]["magnitude"], rtol=1e-12
    )
    np.testing.assert_array_equal(
        after["per_class"]["pos_count"], 2 * before["per_class"]["pos_count"]
    )


def test_corrupt_pickle_state():
    stats = stats_with_data()
    clone = _core.LogitStats(4)
    with raises_exactly(InputError, match="bad magic"):
        clone.__setstate__(b"NOTSTATE" + bytes(100))
    with raises_exactly(InputError, match="truncated"):
        clone.__setstate__(stats.__getstate__()[:-3])
    with raises_exactly(InputError, match="trailing"):
        clone.__setstate__(stats.__getstate__() + b"\0")


# ----------------------------------------------------------------------------------
# A failed update leaves the accumulator as it was


def big_logits_with_nan_at(n, k, row, dtype=np.float32):
    logits, labels, _ = long_tailed(n, k, seed=6, dtype=dtype)
    logits[row, 1] = np.nan
    return logits, labels


@pytest.mark.parametrize("hessian", ["bound", "exact", "none"])
def test_failed_update_changes_nothing(hessian, tmp_path):
    stats = stats_with_data(k=8, hessian=hessian, threads=2)
    state = pickle.dumps(stats)
    report = stats.finalize()
    good, good_labels, _ = long_tailed(50, 8, seed=7)

    failures = [
        # NaN late in a large array: most blocks were processed before the failure
        (NonFiniteError, lambda: stats.update(*big_logits_with_nan_at(100_000, 8, 99_000))),
        (NonFiniteError, lambda: stats.update(*big_logits_with_nan_at(100_000, 8, 3))),
        (LabelError, lambda: stats.update(good, np.where(good_labels == 7, 8, good_labels))),
        (LabelError, lambda: stats.update(good, good_labels[:-1])),
        (InputError, lambda: stats.update(good[:, :7], good_labels)),
        (InputError, lambda: stats.update(good.astype(np.int64), good_labels)),
    ]
    nan_logits, nan_labels = big_logits_with_nan_at(100_000, 8, 77_777)
    path = save_npy(tmp_path, "nan.npy", nan_logits)
    failures.append((NonFiniteError, lambda: stats.update_npy(path, nan_labels)))
    short = save_npy(tmp_path, "short.npy", good)
    short.write_bytes(short.read_bytes()[:-8])
    failures.append((TruncatedFileError, lambda: stats.update_npy(short, good_labels)))
    for cls, call in failures:
        with pytest.raises(cls):
            call()
        assert pickle.dumps(stats) == state
        assert stats.rows == 100
    assert_report_close(stats.finalize(), report, rtol=0, atol=0)


def test_failed_exact_update_after_several_gram_blocks_changes_nothing():
    # float64, K = 256: 4096 rows per exact-mode block; the NaN is in the fourth block.
    stats = stats_with_data(k=256, hessian="exact", threads=2)
    state = pickle.dumps(stats)
    logits, labels = big_logits_with_nan_at(13_000, 256, 12_500, dtype=np.float64)
    with raises_exactly(NonFiniteError, match=r"\brow 12500\b"):
        stats.update(logits, labels)
    assert pickle.dumps(stats) == state


# ----------------------------------------------------------------------------------
# .npy files


def open_with(how: str, path: Path, labels: np.ndarray):
    if how == "analyze_npy":
        return _core.analyze_npy(path, labels)
    if how == "update_npy":
        return _core.LogitStats(4).update_npy(path, labels)
    if how == "npy_header":
        return _core.npy_header(path)
    raise AssertionError(how)


OPENERS = ["analyze_npy", "update_npy", "npy_header"]
LABELS = np.zeros(20, dtype=np.int64)


@pytest.fixture
def good_file(tmp_path) -> Path:
    return save_npy(tmp_path, "logits.npy", np.ones((20, 4), dtype=np.float32))


@pytest.mark.parametrize("how", OPENERS)
@pytest.mark.parametrize("cut", [1, 80, 300])
def test_truncated_data(how, cut, good_file):
    data = good_file.read_bytes()
    good_file.write_bytes(data[:-cut])
    with raises_exactly(TruncatedFileError, match="truncated") as info:
        open_with(how, good_file, LABELS)
    assert str(good_file) in str(info.value)


@pytest.mark.parametrize("how", OPENERS)
@pytest.mark.parametrize("keep", [9, 11, 40])
def test_truncated_header(how, keep, good_file):
    good_file.write_bytes(good_file.read_bytes()[:keep])
    with raises_exactly(TruncatedFileError):
        open_with(how, good_file, LABELS)


@pytest.mark.parametrize("how", OPENERS)
def test_trailing_bytes(how, good_file):
    with good_file.open("ab") as f:
        f.write(b"\0" * 3)
    with raises_exactly(NpyFormatError, match="3 trailing bytes"):
        open_with(how, good_file, LABELS)


@pytest.mark.parametrize("how", OPENERS)
@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.ones((20, 4), dtype=">f4"), r"'>f4' is big-endian"),
        (np.ones((20, 4), dtype=">f8"), r"'>f8' is big-endian"),
        (np.asfortranarray(np.ones((20, 4), dtype=np.float32)), "fortran_order is True"),
        (np.ones((20, 4), dtype=np.int64), r"'<i8' \(signed integer\) is not supported"),
        (np.ones((20, 4), dtype=np.uint8), r"unsigned integer"),
        (np.ones((20, 4), dtype=np.complex64), r"complex"),
        (np.ones(20, dtype=np.float32), r"\(20,\) is 1-D"),
        (np.ones((20, 4, 1), dtype=np.float32), r"is 3-D"),
        (np.ones((20, 0), dtype=np.float32), r"no classes"),
    ],
    ids=[
        "big-endian-f4",
        "big-endian-f8",
        "fortran",
        "int64",
        "uint8",
        "complex",
        "1-D",
        "3-D",
        "no-columns",
    ],
)
def test_unsupported_arrays(how, array, match, tmp_path):
    path = save_npy(tmp_path, "bad.npy", array)
    with raises_exactly(NpyFormatError, match=match):
        open_with(how, path, LABELS)


@pytest.mark.parametrize("how", OPENERS)
@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"this is not a numpy file at all" * 10, "bad magic"),
        (bytes(range(256)) * 4, "bad magic"),
        (b"", "empty file"),
        (b"\x93NUMPY\x09\x00" + b"\0" * 100, "version 9.0"),
    ],
    ids=["text", "binary", "empty", "version"],
)
def test_garbage_files(how, content, match, tmp_path):
    path = tmp_path / "garbage.npy"
    path.write_bytes(content)
    with raises_exactly(NpyFormatError, match=match):
        open_with(how, path, LABELS)


@pytest.mark.parametrize("how", OPENERS)
def test_missing_file(how, tmp_path):
    path = tmp_path / "nope.npy"
    with raises_exactly(FileReadError) as info:
        open_with(how, path, LABELS)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("how", OPENERS)
def test_directory(how, tmp_path):
    with raises_exactly(FileReadError, match="not a regular file") as info:
        open_with(how, tmp_path, LABELS)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("how", ["analyze_npy", "update_npy"])
def test_file_label_errors_name_the_file(how, good_file):
    with raises_exactly(LabelError, match=r"logits\.npy has 20 rows but 19 labels"):
        open_with(how, good_file, LABELS[:19])
    bad = LABELS.copy()
    bad[11] = 4
    with raises_exactly(LabelError, match=r"label 4 at row 11\b"):
        open_with(how, good_file, bad)


def test_file_with_wrong_number_of_columns(good_file):
    with raises_exactly(InputError, match="4 columns but the statistics are over 5 classes"):
        _core.LogitStats(5).update_npy(good_file, LABELS)


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
def test_non_finite_in_file_names_row(dtype, tmp_path):
    logits, labels, _ = long_tailed(5000, 30, seed=8, dtype=dtype)
    logits[4321, 29] = np.inf
    logits[4999, 0] = np.nan
    path = save_npy(tmp_path, "z.npy", logits)
    with raises_exactly(NonFiniteError, match=r"\brow 4321 of .*z\.npy"):
        _core.analyze_npy(path, labels, threads=2)


# ----------------------------------------------------------------------------------
# Sizes the core refuses before it allocates. Each runs in a fresh interpreter: on the
# old core these aborted the process (or were killed for memory), which would take pytest
# down with them.


def run_isolated(code: str) -> str:
    """Runs ``code`` (after ``import numpy as np`` and ``from lort import _core``) in a
    fresh interpreter; returns its output, asserting that it exited normally."""
    done = subprocess.run(
        [sys.executable, "-c", f"import numpy as np\nfrom lort import _core\n{code}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    return done.stdout


def refusal(call: str) -> str:
    """The error class and one-line message that ``call`` raises, from a fresh interpreter."""
    out = run_isolated(
        "from lort.errors import LortError\n"
        f"try:\n    {call}\nexcept LortError as e:\n    print(type(e).__name__, e)\n"
        "else:\n    print('accepted')\n"
    )
    assert out.count("\n") == 1, out
    return out.strip()


def npy_claiming(path: Path, shape: tuple[int, int], descr: str = "<f4") -> Path:
    """A .npy file whose header claims ``shape``, its data a hole (a sparse file of the
    length the header promises)."""
    itemsize = int(descr[-1])
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": descr, "fortran_order": False, "shape": shape}
        )
        f.truncate(f.tell() + shape[0] * shape[1] * itemsize)
    return path


def test_max_classes_is_exported():
    assert _core.MAX_CLASSES == 1 << 24
    assert _core.EXACT_MAX_CLASSES < _core.MAX_CLASSES


@pytest.mark.parametrize(
    ("shape", "descr"),
    [((0, 2**40), "<f2"), ((0, 2**28), "<f4"), ((1, 2**27), "<f4"), ((0, 2**24 + 1), "<f8")],
    ids=["0x2^40-f2", "0x2^28-f4", "1x2^27-f4", "0xmax+1-f8"],
)
@pytest.mark.parametrize("how", ["analyze_npy", "npy_header", "curvature_npy"])
def test_header_beyond_max_classes_is_refused(shape, descr, how, tmp_path):
    path = npy_claiming(tmp_path / "wide.npy", shape, descr)
    labels = f"np.zeros({shape[0]}, np.int64)"
    call = {
        "analyze_npy": f"_core.analyze_npy({str(path)!r}, {labels})",
        "npy_header": f"_core.npy_header({str(path)!r})",
        "curvature_npy": f"_core.curvature_npy([{str(path)!r}])",
    }[how]
    assert refusal(call) == (
        f"NpyFormatError {path}: shape {shape} has {shape[1]} classes (columns); "
        f"lort reads at most {_core.MAX_CLASSES}"
    )


def test_cli_refuses_a_header_beyond_max_classes(tmp_path):
    path = npy_claiming(tmp_path / "wide.npy", (1, 2**25), "<f4")
    labels = save_npy(tmp_path, "labels.npy", np.zeros(1, np.int64))
    done = subprocess.run(
        [sys.executable, "-m", "lort", "analyze", str(path), "--labels", str(labels)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode not in (0, -6, -9), done.returncode
    assert "lort reads at most 16777216" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    ("num_classes", "message"),
    [
        ("2**63", "num_classes is 9223372036854775808; lort handles at most 16777216 classes"),
        ("2**40", "num_classes is 1099511627776; lort handles at most 16777216 classes"),
        ("2**24 + 1", "num_classes is 16777217; lort handles at most 16777216 classes"),
        ("2**64", "num_classes is 18446744073709551616; it must be between 1 and 16777216"),
        ("-1", "num_classes is -1; it must be between 1 and 16777216"),
        ("np.int8(-3)", "num_classes is -3; it must be between 1 and 16777216"),
        ("2.5", "num_classes must be an integer, got float"),
        ("'10'", "num_classes must be an integer, got str"),
    ],
)
def test_num_classes_out_of_range_is_one_line(num_classes, message):
    assert refusal(f"_core.LogitStats({num_classes})") == f"InputError {message}"


def test_num_classes_accepts_numpy_integers():
    assert _core.LogitStats(np.int64(7)).num_classes == 7
    assert _core.LogitStats(np.uint16(3), hessian="none").num_classes == 3


@pytest.mark.parametrize("method", ["lanczos", "exact"])
def test_curvature_beyond_max_classes_is_refused(method):
    # np.zeros takes pages from the system as they are touched: this costs nothing.
    call = f"_core.curvature(np.zeros((1, 2**31), np.float16), method={method!r})"
    assert refusal(call) == (
        "InputError the number of classes is 2147483648; lort handles at most 16777216 classes"
        if method == "lanczos"
        else "InputError num_classes is 2147483648; lort handles at most 16777216 classes"
    )


def test_analysis_curvature_beyond_max_classes_is_refused():
    out = run_isolated(
        "import lort\nfrom lort.errors import InputError\n"
        "try:\n    lort.curvature(np.zeros((1, 2**31), np.float16), method='lanczos')\n"
        "except InputError as e:\n    print(e)\n"
    )
    assert out.strip() == (
        "the number of classes is 2147483648; lort handles at most 16777216 classes"
    )


def test_memory_sizes_saturate_instead_of_wrapping():
    assert _core.exact_memory_bytes(2**40) == 2**64 - 1
    assert _core.lanczos_memory_bytes(2**62) == 2**64 - 1


# Copies of a state the system cannot hold: `copy`, `merge` with itself, pickling and
# `finalize` cloned or grew vectors infallibly, aborting the process ("memory allocation of
# ... failed") where every other allocation of the core is an error.
STATE_BEYOND_MEMORY = """
import pickle, resource
from lort.errors import LortError
s = _core.LogitStats(2**24)  # some 1.3 GB of state, mapped but never touched
data = next(int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmData'))
room = data * 1024 + (256 << 20)  # no room for a second copy of the state
resource.setrlimit(resource.RLIMIT_DATA, (room, room))
for name, call in [
    ('copy', s.copy),
    ('merge', lambda: s.merge(s)),
    ('pickle', lambda: pickle.dumps(s)),
    ('finalize', s.finalize),
]:
    try:
        call()
    except LortError as e:
        print(name, type(e).__name__, e)
    else:
        print(name, 'accepted')
"""


def test_a_state_the_system_cannot_copy_is_an_error_not_an_abort():
    lines = run_isolated(STATE_BEYOND_MEMORY).splitlines()
    assert [line.split(" ")[:2] for line in lines] == [
        [name, "InputError"] for name in ("copy", "merge", "pickle", "finalize")
    ], lines
    assert all("out of memory: cannot allocate" in line for line in lines), lines


def test_copies_and_pickles_are_exact():
    for hessian in ("none", "bound", "exact"):
        stats = stats_with_data(5, hessian=hessian)
        copied = stats.copy()
        assert pickle.dumps(copied) == pickle.dumps(stats)
        assert_report_close(pickle.loads(pickle.dumps(stats)).finalize(), stats.finalize())
        stats.merge(stats)
        copied.merge(copied.copy())
        assert pickle.dumps(copied) == pickle.dumps(stats)
