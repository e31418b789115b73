"""Shared generators, fixtures and comparison helpers for the lort test suite.

Test modules import the plain functions from here (``from conftest import ...``);
pytest puts this directory on ``sys.path`` because ``tests/`` is not a package.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
LABEL_DTYPES = (
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
)

PER_CLASS_INTS = ("pos_count", "neg_count", "predicted_count", "train_count")
PER_CLASS_FLOATS = (
    "pos_mean",
    "neg_mean",
    "pos_std",
    "neg_std",
    "std",
    "magnitude",
    "rstd",
    "rstd_neg",
    "rstd_all",
    "accuracy",
)
# Values that go through the softmax normaliser: computed with a single-precision
# exp for float16/float32 input.
CONFIDENCE_KEYS = ("nll", "ece")


def train_counts_for(k: int, head: int = 500, ratio: float = 100.0) -> np.ndarray:
    """Exponentially decaying training counts: ``head`` images down to head / ratio."""
    if k == 1:
        return np.array([head], dtype=np.int64)
    j = np.arange(k)
    return np.maximum(1, np.round(head * ratio ** (-j / (k - 1)))).astype(np.int64)


def long_tailed(
    n: int,
    k: int,
    seed: int,
    *,
    dtype: Any = np.float64,
    offset: float = 0.0,
    spread: float = 1.0,
    margin: float = 2.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic (logits, labels, train_counts) of a long-tailed classifier.

    Test labels follow the training distribution, so tail classes may have no or
    one test row. Logits are ``offset + spread * (noise + margin * onehot + bias)``
    with a head-favouring bias ``0.5 log p``, cast to ``dtype``.
    """
    rng = np.random.default_rng(seed)
    counts = train_counts_for(k)
    p = counts / counts.sum()
    labels = rng.choice(k, size=n, p=p).astype(np.int64)
    base = rng.normal(size=(n, k)) + 0.5 * np.log(p)[None, :]
    base[np.arange(n), labels] += margin
    logits = (offset + spread * base).astype(dtype)
    return logits, labels, counts


def save_npy(directory: Path, name: str, array: np.ndarray) -> Path:
    path = directory / name
    np.save(path, array)
    return path


@pytest.fixture(scope="module")
def one_thread() -> Iterator[int]:
    """Tiny models on a shared 2-core machine: one torch intra-op thread for the module (idle
    threads of a small model spin); yields the count before, which it restores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield threads
    torch.set_num_threads(threads)


@pytest.fixture
def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small long-tailed float64 set: 600 rows, 12 classes."""
    return long_tailed(600, 12, seed=0)


# ----------------------------------------------------------------------------------
# Comparison of finalize() reports (from the core or from tests/reference.py).


def _close(got: float | None, want: float | None, rtol: float, atol: float, what: str) -> None:
    if want is None:
        assert got is None, f"{what}: expected None, got {got!r}"
        return
    assert got is not None, f"{what}: got None, expected {want!r}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def assert_hessian_close(
    got: dict[str, Any] | None,
    want: dict[str, Any] | None,
    *,
    rtol: float = 1e-9,
    atol: float = 1e-15,
    lambda_atol: float = 1e-12,
) -> None:
    """``want`` comes from the reference (exact lambda_min) or from another report.

    lambda_min is 0 in exact arithmetic (H 1 = 0); what either side computes is
    rounding noise of the accumulated entries of H, which are at most 1 in size, so
    two values of it are compared to ``lambda_atol``, not relatively.
    """
    if want is None:
        assert got is None, f"hessian: expected None, got {got!r}"
        return
    assert got is not None, "hessian: got None"
    np.testing.assert_allclose(got["scale"], want["scale"], rtol=rtol, atol=atol, err_msg="scale")
    np.testing.assert_allclose(got["tolerance"], want["tolerance"], rtol=rtol, err_msg="tolerance")
    if "mode" in want:  # another core report
        assert got["mode"] == want["mode"]
        assert abs(got["lambda_min"] - want["lambda_min"]) <= lambda_atol, (got, want)
    elif got["mode"] == "exact":
        assert abs(got["lambda_min"] - want["lambda_min"]) <= lambda_atol, (got, want)
    else:  # a Gershgorin lower bound of the exact value
        assert got["mode"] == "bound"
        assert got["lambda_min"] <= want["lambda_min"] + lambda_atol, (got, want)
    # The psd verdict itself is checked by dedicated tests (test_core_numerics.py).


def assert_report_close(
    got: dict[str, Any],
    want: dict[str, Any],
    *,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    conf_rtol: float | None = None,
    hessian: bool = True,
) -> None:
    """Compares two finalize()-shaped dicts; ``conf_rtol`` for softmax-based values."""
    conf_rtol = rtol if conf_rtol is None else conf_rtol
    assert got["num_classes"] == want["num_classes"]

    gpc, wpc = got["per_class"], want["per_class"]
    assert set(gpc) == set(wpc), (sorted(gpc), sorted(wpc))
    for name in PER_CLASS_INTS:
        if name in wpc:
            np.testing.assert_array_equal(gpc[name], wpc[name], err_msg=name)
            assert gpc[name].dtype.kind in "iu", name
    for name in PER_CLASS_FLOATS:
        assert gpc[name].dtype == np.float64, name
        np.testing.assert_allclose(
            gpc[name], wpc[name], rtol=rtol, atol=atol, equal_nan=True, err_msg=name
        )

    go, wo = got["overall"], want["overall"]
    assert go["rows"] == wo["rows"]
    assert go["omitted_rows"] == wo["omitted_rows"]
    for name in ("accuracy", "balanced_accuracy"):
        _close(go[name], wo[name], rtol, atol, name)
    for name in CONFIDENCE_KEYS:
        _close(go[name], wo[name], conf_rtol, atol, name)

    gb, wb = got["ece_bins"], want["ece_bins"]
    np.testing.assert_array_equal(gb["count"], wb["count"], err_msg="ece_bins.count")
    np.testing.assert_array_equal(gb["correct"], wb["correct"], err_msg="ece_bins.correct")
    np.testing.assert_allclose(
        gb["confidence"], wb["confidence"], rtol=conf_rtol, atol=atol, err_msg="ece_bins.conf"
    )

    if want["groups"] is None:
        assert got["groups"] is None
    else:
        assert got["groups"] is not None
        assert set(got["groups"]) == set(want["groups"]) == {"many", "medium", "few"}
        for g, wg in want["groups"].items():
            gg = got["groups"][g]
            if wg is None:
                assert gg is None, f"group {g}: expected None, got {gg!r}"
                continue
            assert gg is not None, f"group {g}: got None"
            assert gg["classes"] == wg["classes"], g
            for name in ("accuracy", "mean_magnitude", "mean_rstd"):
                _close(gg[name], wg[name], rtol, atol, f"{g}.{name}")

    if hessian:
        assert_hessian_close(got["hessian"], want["hessian"], rtol=conf_rtol)


def assert_reports_identical(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bit-for-bit equality of two finalize() dicts (NaN equals NaN)."""
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            assert isinstance(y, dict), key
            assert_reports_identical(x, y)
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, key
            np.testing.assert_array_equal(x, y, err_msg=key, strict=True)
        elif isinstance(x, float) and np.isnan(x):
            assert isinstance(y, float) and np.isnan(y), key
        else:
            assert x == y, (key, x, y)


# A small long-tailed CIFAR-10 image folder cut from the shared JPEG archive.

SHARED_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"
ARCHIVE_VAR = "LORT_CIFAR_ARCHIVE"
CLASS_TRAIN_MAX, CLASS_TEST, TAIL_RATIO = 40, 10, 10.0


def cifar_archive() -> Path:
    """The CIFAR-10 JPEG archive (train/<class>/NNNN.jpg, test/...) that $LORT_CIFAR_ARCHIVE
    names, else the shared one beside the clone; the test skips, saying how to point at it."""
    given = os.environ.get(ARCHIVE_VAR)
    archive = Path(given) if given else SHARED_ARCHIVE
    if not archive.is_file():
        pytest.skip(
            f"no CIFAR-10 JPEG archive at {archive}: set {ARCHIVE_VAR} to cifar10-jpeg.tar.gz"
        )
    return archive


@pytest.fixture(scope="module")
def small_cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/<class>/ with 40 down to 4 images (a long tail), test/<class>/ with 10."""
    archive = cifar_archive()
    root = tmp_path_factory.mktemp("cifar10-small")
    wanted = ["train/*/00[0-3]?.jpg", "test/*/000?.jpg"]
    if shutil.which("tar"):
        subprocess.run(
            ["tar", "xzf", str(archive), "-C", str(root), "--wildcards", *wanted],
            check=True,
        )
    else:
        with tarfile.open(archive) as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 3:
                    index = int(parts[2].split(".")[0])
                    limit = CLASS_TRAIN_MAX if parts[0] == "train" else CLASS_TEST
                    if index < limit:
                        tar.extract(member, root, filter="data")
    classes = sorted(p.name for p in (root / "train").iterdir())
    assert len(classes) == 10
    for i, name in enumerate(classes):
        keep = math.floor(CLASS_TRAIN_MAX * TAIL_RATIO ** (-i / 9))
        for f in sorted((root / "train" / name).iterdir())[keep:]:
            f.unlink()
    return root
