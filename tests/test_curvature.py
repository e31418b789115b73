"""The bias Hessian's curvature on the subspace orthogonal to the ones vector.

Exact values against ``numpy.linalg.eigvalsh`` of the projected float64 matrix
(tests/reference.py) on adversarial softmax shapes; the Lanczos estimate against
the exact values; ``analyze`` / ``lort analyze`` reporting it; memory budgets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import flat, ok, run_cli
from conftest import long_tailed, save_npy
from lort import _core
from lort.analysis import analyze, curvature, new_stats
from lort.errors import InputError, NonFiniteError
from reference import curvature_stats, exact_hessian, ones_complement_basis


def rel(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


def near_one_hot() -> np.ndarray:
    # Every row puts all but about 1e-11 of its mass on one class.
    rng = np.random.default_rng(1)
    n, k = 600, 12
    z = rng.normal(size=(n, k))
    z[np.arange(n), rng.integers(0, k, n)] += 25.0
    return z


def uniform() -> np.ndarray:
    # s = 1/K in every row: H = (I - 1 1^T / K) / K, all K - 1 eigenvalues equal.
    return np.full((300, 9), 0.7)


def two_classes() -> np.ndarray:
    return np.random.default_rng(2).normal(size=(500, 2)) * 2.0


def empty_class() -> np.ndarray:
    # Class 5 is never the label and never near the top: its row of H is small.
    z, labels, _ = long_tailed(800, 20, seed=3)
    z = z[labels != 5]
    z[:, 5] -= 4.0
    return z


def long_tailed_64() -> np.ndarray:
    return long_tailed(2000, 64, seed=4, spread=2.0)[0]


CASES = {
    "near-one-hot": near_one_hot,
    "uniform": uniform,
    "K=2": two_classes,
    "empty class": empty_class,
    "long-tailed": long_tailed_64,
}


def exact_from_stats(z: np.ndarray) -> dict:
    stats = new_stats(z.shape[1], hessian="exact", threads=2)
    stats.update(z, np.zeros(z.shape[0], dtype=np.int64))
    return stats.finalize()["hessian"]


@pytest.mark.parametrize("case", CASES)
def test_exact_matches_eigvalsh_of_the_projected_matrix(case):
    z = CASES[case]()
    want = curvature_stats(z)
    got = exact_from_stats(z)["curvature"]
    assert got["method"] == "exact" and got["converged"] and got["passes"] == 0
    assert got["rows"] == z.shape[0]
    for key in ("lambda_2", "lambda_max", "condition"):
        assert rel(got[key], want[key]) <= 1e-9, (case, key, got[key], want[key])
    # The Python function gives the same numbers.
    same = curvature(z, method="exact", threads=2)
    assert (same.lambda_2, same.lambda_max) == (got["lambda_2"], got["lambda_max"])


def test_reference_basis_is_the_projection():
    # The reference's Q^T H Q has the eigenvalues of P H P less the ones direction's.
    z = long_tailed_64()
    h = exact_hessian(z)
    k = h.shape[0]
    p = np.eye(k) - 1.0 / k
    ev, vecs = np.linalg.eigh(p @ h @ p)
    ones = np.argmax(np.abs(vecs.T @ np.full(k, k**-0.5)))
    rest = np.delete(ev, ones)
    q = ones_complement_basis(k)
    np.testing.assert_allclose(np.linalg.eigvalsh(q.T @ h @ q), rest, rtol=1e-10)
    assert abs(ev[ones]) < 1e-15


def test_uniform_softmax_values():
    got = curvature(uniform(), method="exact")
    assert math.isclose(got.lambda_2, 1 / 9, rel_tol=1e-13)
    assert math.isclose(got.condition, 1.0, rel_tol=1e-12)


def test_near_one_hot_needs_the_cancellation_free_diagonal():
    # diag(sum s) - S^T S loses the diagonal there: the reference would be off by far
    # more than 1e-9, so the agreement above is not a coincidence of two equal errors.
    z = near_one_hot()
    _, e = z.max(axis=1), np.exp(z - z.max(axis=1, keepdims=True))
    s = e / e.sum(axis=1, keepdims=True)
    naive = (np.diag(s.sum(axis=0)) - s.T @ s) / z.shape[0]
    q = ones_complement_basis(z.shape[1])
    naive_l2 = np.linalg.eigvalsh(q.T @ naive @ q)[0]
    assert rel(naive_l2, curvature_stats(z)["lambda_2"]) > 1e-8


@pytest.mark.parametrize("case", ["near-one-hot", "K=2", "long-tailed"])
def test_float32_logits_within_their_softmax_precision(case):
    z = CASES[case]().astype(np.float32)
    want = curvature_stats(z.astype(np.float64))
    got = exact_from_stats(z)["curvature"]
    assert rel(got["lambda_2"], want["lambda_2"]) <= 1e-5
    assert rel(got["lambda_max"], want["lambda_max"]) <= 1e-5


def test_psd_verdict_and_lambda_min_are_kept():
    h = exact_from_stats(long_tailed_64())
    assert h["psd"] is True and abs(h["lambda_min"]) <= 1e-12


# ------------------------------------------------------------------ Lanczos


def cifar10_like() -> np.ndarray:
    # 10,000 test rows of a 10-class classifier about 80% right, head-biased.
    return long_tailed(10_000, 10, seed=10, spread=2.5, margin=1.5)[0].astype(np.float32)


def synthetic_1000() -> np.ndarray:
    return long_tailed(4000, 1000, seed=11, spread=1.5, margin=3.0)[0]


@pytest.mark.parametrize("make", [cifar10_like, synthetic_1000], ids=["K=10", "K=1000"])
def test_lanczos_within_1e3_of_exact(make):
    z = make()
    exact = curvature(z, method="exact", threads=2)
    est = curvature(z, method="lanczos", threads=2)
    assert est.method == "lanczos" and est.converged, est
    assert rel(est.lambda_2, exact.lambda_2) <= 1e-3, (est, exact)
    assert rel(est.lambda_max, exact.lambda_max) <= 1e-3, (est, exact)
    assert rel(est.condition, exact.condition) <= 2e-3
    # Rayleigh quotients on 1-perp: never below lambda_2 nor above lambda_max.
    assert est.lambda_2 >= exact.lambda_2 * (1 - 1e-9)
    assert est.lambda_max <= exact.lambda_max * (1 + 1e-9)


def test_lanczos_over_files_and_shards_equals_in_memory(tmp_path):
    z, labels, _ = long_tailed(3000, 40, seed=12, dtype=np.float32)
    mem = curvature(z, method="lanczos", threads=2)
    whole = save_npy(tmp_path, "z.npy", z)
    shards = [save_npy(tmp_path, f"z{i}.npy", part) for i, part in enumerate(np.split(z, 3))]
    one = analyze(whole, labels, threads=2).hessian
    many = analyze(shards, labels, threads=2).hessian
    for h in (one, many):
        assert h is not None and h.mode == "bound" and h.curvature is not None
        assert h.curvature.method == "lanczos" and h.curvature.rows == 3000
        assert rel(h.curvature.lambda_2, mem.lambda_2) <= 1e-12
        assert rel(h.curvature.lambda_max, mem.lambda_max) <= 1e-12


def test_analyze_curvature_modes(dataset):
    logits, labels, _ = dataset
    exact = analyze(logits, labels, hessian="exact").hessian
    assert exact is not None and exact.curvature is not None
    assert exact.curvature.method == "exact"
    both = analyze(logits, labels, hessian="exact", curvature="lanczos").hessian
    assert both is not None and both.curvature is not None
    assert both.curvature.method == "lanczos"
    assert rel(both.curvature.lambda_2, exact.curvature.lambda_2) <= 1e-3
    none = analyze(logits, labels, curvature="none").hessian
    assert none is not None and none.curvature is None
    assert analyze(logits, labels, hessian="none").hessian is None
    with pytest.raises(InputError, match="curvature='sideways'"):
        analyze(logits, labels, curvature="sideways")  # type: ignore[arg-type]


def test_non_finite_rows_follow_the_nan_policy():
    z = long_tailed(500, 8, seed=13)[0]
    z[123, 4] = np.inf
    with pytest.raises(NonFiniteError, match="row 123"):
        curvature(z, method="lanczos")
    with pytest.raises(NonFiniteError, match="row 123"):
        curvature(z, method="exact")
    assert curvature(z, method="lanczos", nan_policy="omit").rows == 499
    assert curvature(z, method="exact", nan_policy="omit").rows == 499


def test_bad_inputs_are_one_clear_error():
    with pytest.raises(InputError, match="at least 2 classes"):
        curvature(np.zeros((5, 1)))
    with pytest.raises(InputError, match="method="):
        _core.curvature(np.zeros((5, 3)), method="qr")
    with pytest.raises(InputError, match="finite"):
        curvature(np.zeros((0, 3)), method="lanczos")


# ------------------------------------------------------------ memory budget


def test_exact_memory_is_two_k_by_k_matrices():
    assert _core.exact_memory_bytes(8142) >= 16 * 8142**2
    assert _core.exact_memory_bytes(8142) < 16 * 8142**2 + (64 << 20)
    assert _core.EXACT_MAX_CLASSES >= 8192


def test_max_memory_refuses_exact_before_any_work(dataset):
    logits, labels, _ = dataset
    with pytest.raises(InputError, match=r"hessian='exact' at K = 12 needs .* budget"):
        analyze(logits, labels, hessian="exact", max_memory=1000)
    with pytest.raises(InputError, match="budget"):
        new_stats(8142, hessian="exact", max_memory=1 << 30)
    new_stats(8142, hessian="bound", max_memory=1 << 30)
    with pytest.raises(InputError, match="Lanczos"):
        analyze(logits, labels, max_memory=1000)
    analyze(logits, labels, curvature="none", max_memory=1000)


# ---------------------------------------------------------------------- CLI


@pytest.fixture
def files(tmp_path, dataset):
    logits, labels, counts = dataset
    return (
        save_npy(tmp_path, "logits.npy", logits),
        save_npy(tmp_path, "labels.npy", labels),
        save_npy(tmp_path, "counts.npy", counts),
    )


def test_cli_prints_curvature_and_writes_it_to_json(files, tmp_path):
    logits, labels, counts = files
    out = tmp_path / "r.json"
    res = ok("analyze", logits, "--labels", labels, "--train-counts", counts, "--json", out)
    text = flat(res.output)
    assert "curvature on 1-perp (Lanczos" in text and "lambda_2 =" in text, text
    h = json.loads(out.read_text())["hessian"]
    assert h["psd"] is True
    c = h["curvature"]
    assert c["method"] == "lanczos" and c["lambda_2"] > 0 and c["condition"] >= 1
    res = ok("analyze", logits, "--labels", labels, "--hessian", "exact", "--json", out)
    assert "curvature on 1-perp (exact)" in flat(res.output)
    exact = json.loads(out.read_text())["hessian"]["curvature"]
    assert rel(c["lambda_2"], exact["lambda_2"]) <= 1e-3
    res = ok("analyze", logits, "--labels", labels, "--curvature", "none")
    # The path (a temporary folder named after this test) is printed: look for the line itself.
    assert "curvature on" not in res.output and "lambda_2" not in res.output


def test_cli_max_memory_refusal_is_one_line(files):
    logits, labels, _ = files
    res = run_cli("analyze", logits, "--labels", labels, "--hessian", "exact", "--max-memory", "1K")
    assert res.exit_code != 0
    assert "needs" in res.output and "budget is" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    res = run_cli("analyze", logits, "--labels", labels, "--max-memory", "lots")
    assert res.exit_code != 0 and "not a size" in res.output
    ok("analyze", logits, "--labels", labels, "--hessian", "exact", "--max-memory", "2G")


def test_cli_help_states_exact_memory():
    text = flat(ok("analyze", "--help").output)
    assert "16 K^2 bytes" in text and "--max-memory" in text and "--curvature" in text


def test_compare_reports_the_curvature_of_each_methods_test_logits(tmp_path: Path) -> None:
    """`lort compare`'s lambda_2 / condition columns are those of the test logits: for the
    run's own method they equal the curvature of the run's logits.npy."""
    from cli_helpers import flat, ok

    run = tmp_path / "run"
    ok("fit", "--out", run, "--epochs1", "2", "--epochs2", "2", "--method", "ce",
       "--stage2-stop", "last")  # fmt: skip
    result = ok("compare", run, "--protocol", "shared", "--methods", "ce,tau-norm")
    table = json.loads((run / "compare-shared-ce_tau-norm.json").read_text())
    rows = {r["method"]: r for r in table["rows"]}
    want = curvature(np.load(run / "logits.npy"))
    assert rows["ce"]["lambda_2"]["mean"] == pytest.approx(want.lambda_2, rel=1e-12)
    assert rows["ce"]["condition"]["mean"] == pytest.approx(want.condition, rel=1e-12)
    assert rows["tau-norm"]["lambda_2"]["mean"] != rows["ce"]["lambda_2"]["mean"]
    assert "lambda_2" in flat(result.stdout) and "condition" in flat(result.stdout)
