"""A plain float64 numpy reference for everything ``LogitStats.finalize()`` returns.

This module is the specification the Rust core is tested against. It works on the
whole (logits, labels) set in memory, in float64, with the most direct numpy
expression of each definition; speed is not a concern.

Definitions (arXiv 2403.00250, Section 4, and ``lort.analysis``):

- positives of class ``i``: the rows labelled ``i``; negatives: every other row;
- ``pos_mean``/``neg_mean``: mean of column ``i`` over the positives/negatives;
- ``pos_std``/``neg_std``/``std``: population std (ddof=0) of column ``i`` over the
  positives / the negatives / the whole column;
- ``magnitude`` ``L_i = pos_mean - neg_mean``;
- ``rstd = pos_std / L``, ``rstd_neg = neg_std / L``, ``rstd_all = std / L``;
- ``accuracy``: rows labelled ``i`` whose argmax (numpy's first maximum) is ``i``,
  divided by the rows labelled ``i``; ``predicted_count``: rows whose argmax is ``i``;
- per-class values that are undefined (no rows of the kind needed, or ``L = 0``)
  are NaN;
- overall accuracy, balanced accuracy (mean of the defined per-class accuracies),
  NLL ``mean(logsumexp(z) - z_y)``, and ECE over 15 equal-width bins of the top-1
  confidence ``max softmax``, bin ``b`` holding confidences in ``(b/15, (b+1)/15]``;
  an overall value that is undefined (no rows) is None;
- groups by training images per class: many (> 100), medium (20..100), few (< 20);
  a group's accuracy, mean magnitude and mean rstd average the group's classes whose
  value is finite (None when none is); a group with no classes is None;
- the Hessian of the mean cross-entropy with respect to the bias,
  ``H = mean_n(diag(s_n) - s_n s_n^T)`` with ``s_n = softmax(z_n)``: its smallest
  eigenvalue (0 in exact arithmetic: H 1 = 0), the largest mean softmax probability
  of a class (``scale``: the rounding errors of H's entries are relative to it) and
  the rounding tolerance ``4 K eps max(scale, tiny)`` that the PSD verdict allows;
  and its curvature on the subspace orthogonal to the ones vector: smallest
  (lambda_2) and largest eigenvalue there, and their ratio.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ECE_BINS = 15
MANY_ABOVE = 100  # many-shot: more than 100 training images
FEW_BELOW = 20  # few-shot: fewer than 20; medium-shot: 20..100
GROUP_NAMES = ("many", "medium", "few")


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else np.nan


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=0)) if values.size else np.nan


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` elementwise, NaN where ``b`` is 0 (or either side is NaN)."""
    out = np.full(np.broadcast(a, b).shape, np.nan)
    ok = b != 0
    np.divide(a, b, out=out, where=ok)
    return out


def _finite_mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def shot_group(train_count: int) -> str:
    if train_count > MANY_ABOVE:
        return "many"
    if train_count >= FEW_BELOW:
        return "medium"
    return "few"


def softmax_parts(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the maximum ``m`` and ``exp(z - m)`` (so softmax = e / e.sum())."""
    m = z.max(axis=1)
    return m, np.exp(z - m[:, None])


def per_class_stats(z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    n, k = z.shape
    out: dict[str, list[Any]] = {
        name: []
        for name in ("pos_count", "neg_count", "pos_mean", "neg_mean", "pos_std", "neg_std", "std")
    }
    for i in range(k):
        column = z[:, i]
        pos = column[y == i]
        neg = column[y != i]
        out["pos_count"].append(pos.size)
        out["neg_count"].append(neg.size)
        out["pos_mean"].append(_mean(pos))
        out["neg_mean"].append(_mean(neg))
        out["pos_std"].append(_std(pos))
        out["neg_std"].append(_std(neg))
        out["std"].append(_std(column))
    pc = {name: np.array(v, dtype=np.float64) for name, v in out.items()}
    pc["pos_count"] = pc["pos_count"].astype(np.uint64)
    pc["neg_count"] = pc["neg_count"].astype(np.uint64)

    magnitude = pc["pos_mean"] - pc["neg_mean"]
    pc["magnitude"] = magnitude
    pc["rstd"] = _divide(pc["pos_std"], magnitude)
    pc["rstd_neg"] = _divide(pc["neg_std"], magnitude)
    pc["rstd_all"] = _divide(pc["std"], magnitude)

    predicted = z.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)  # first maximum wins
    hits = predicted == y
    correct = np.bincount(y[hits], minlength=k)
    pc["accuracy"] = _divide(correct.astype(np.float64), pc["pos_count"].astype(np.float64))
    pc["predicted_count"] = np.bincount(predicted, minlength=k).astype(np.uint64)
    return pc


def overall_stats(z: np.ndarray, y: np.ndarray, accuracy: np.ndarray) -> dict[str, Any]:
    """Overall scores and the ECE bins."""
    n, _ = z.shape
    bins = {
        "count": np.zeros(ECE_BINS, dtype=np.uint64),
        "confidence": np.zeros(ECE_BINS, dtype=np.float64),
        "correct": np.zeros(ECE_BINS, dtype=np.uint64),
    }
    if n == 0:
        overall = dict(accuracy=None, balanced_accuracy=None, nll=None, ece=None)
        return {"overall": {"rows": 0, "omitted_rows": 0, **overall}, "ece_bins": bins}

    m, e = softmax_parts(z)
    sumexp = e.sum(axis=1)
    # (m - z_y) + log(sumexp): m + log(sumexp) would lose log(sumexp) next to a huge m.
    nll = float(np.mean((m - z[np.arange(n), y]) + np.log(sumexp)))

    confidence = 1.0 / sumexp  # max softmax = exp(0) / sum
    hits = z.argmax(axis=1) == y
    # bin b holds (b/15, (b+1)/15]
    which = np.clip(np.ceil(confidence * ECE_BINS), 1, ECE_BINS).astype(np.int64) - 1
    for b in range(ECE_BINS):
        inside = which == b
        bins["count"][b] = inside.sum()
        bins["confidence"][b] = confidence[inside].sum()
        bins["correct"][b] = hits[inside].sum()
    ece = float(np.sum(np.abs(bins["correct"] - bins["confidence"])) / n)

    overall = {
        "rows": n,
        "omitted_rows": 0,
        "accuracy": float(hits.mean()),
        "balanced_accuracy": _finite_mean(accuracy),
        "nll": nll,
        "ece": ece,
    }
    return {"overall": overall, "ece_bins": bins}


def group_stats(pc: dict[str, np.ndarray], train_counts: np.ndarray) -> dict[str, Any]:
    names = np.array([shot_group(int(c)) for c in train_counts])
    groups: dict[str, Any] = {}
    for g in GROUP_NAMES:
        members = names == g
        if not members.any():
            groups[g] = None
            continue
        groups[g] = {
            "classes": int(members.sum()),
            "accuracy": _finite_mean(pc["accuracy"][members]),
            "mean_magnitude": _finite_mean(pc["magnitude"][members]),
            "mean_rstd": _finite_mean(pc["rstd"][members]),
        }
    return groups


def exact_hessian(z: np.ndarray) -> np.ndarray:
    """``H = mean_n(diag(s_n) - s_n s_n^T)``, summed as diag(sum s (1 - s)) - offdiag(S^T S).

    ``1 - s_i`` is ``(sum_j e_j - e_i) / sum_j e_j``, and for each row's largest term
    the sum of the other terms: ``1 - s_max`` would cancel for a nearly one-hot row.
    """
    n, _ = z.shape
    _, e = softmax_parts(z)
    total = e.sum(axis=1, keepdims=True)
    s = e / total
    rest = total - e
    top = z.argmax(axis=1)
    others = e.copy()
    others[np.arange(n), top] = 0.0
    rest[np.arange(n), top] = others.sum(axis=1)
    h = -(s.T @ s)
    np.fill_diagonal(h, (s * rest / total).sum(axis=0))
    return h / n


def ones_complement_basis(k: int) -> np.ndarray:
    """An orthonormal basis (K x (K-1)) of the subspace orthogonal to the ones vector."""
    projector = np.eye(k) - np.full((k, k), 1.0 / k)
    q, _ = np.linalg.qr(projector[:, : k - 1])
    return q


def curvature_stats(z: np.ndarray) -> dict[str, float]:
    """lambda_2, lambda_max and their ratio: ``numpy.linalg.eigvalsh`` of H projected
    onto the subspace orthogonal to the ones vector (Q^T H Q; its eigenvalues are
    those of P H P, P = I - 1 1^T / K, less the ones direction's 0)."""
    q = ones_complement_basis(z.shape[1])
    ev = np.linalg.eigvalsh(q.T @ exact_hessian(np.asarray(z, dtype=np.float64)) @ q)
    lam2, lmax = float(ev[0]), float(ev[-1])
    return {
        "lambda_2": lam2,
        "lambda_max": lmax,
        "condition": lmax / lam2 if lam2 > 0 else float("inf"),
    }


def hessian_stats(z: np.ndarray) -> dict[str, float] | None:
    n, k = z.shape
    if n == 0:
        return None
    h = exact_hessian(z)
    _, e = softmax_parts(z)
    scale = float(np.max((e / e.sum(axis=1, keepdims=True)).mean(axis=0)))
    return {
        "lambda_min": float(np.linalg.eigvalsh(h)[0]),
        "scale": scale,
        "tolerance": 4.0 * k * np.finfo(np.float64).eps * max(scale, np.finfo(np.float64).tiny),
    }


def reference(
    logits: np.ndarray,
    labels: np.ndarray,
    train_counts: np.ndarray | None = None,
    *,
    hessian: bool = True,
) -> dict[str, Any]:
    """Everything ``finalize`` reports, from the whole data set in float64.

    ``hessian`` computes the exact K x K Hessian (skip it for large K).
    """
    z = np.asarray(logits).astype(np.float64)
    y = np.asarray(labels).astype(np.int64)
    assert z.ndim == 2 and y.shape == (z.shape[0],)
    k = z.shape[1]
    assert ((y >= 0) & (y < k)).all()

    pc = per_class_stats(z, y)
    overall = overall_stats(z, y, pc["accuracy"])
    groups = None
    if train_counts is not None:
        train_counts = np.asarray(train_counts, dtype=np.int64)
        pc["train_count"] = train_counts.astype(np.uint64)
        groups = group_stats(pc, train_counts)
    return {
        "num_classes": k,
        "per_class": pc,
        "overall": overall["overall"],
        "groups": groups,
        "hessian": hessian_stats(z) if hessian else None,
        "ece_bins": overall["ece_bins"],
    }
