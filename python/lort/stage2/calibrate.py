"""Temperature scaling: one scalar T fitted on the validation split by NLL, so that
``softmax(z / T)`` are probabilities one can act on (Guo et al., "On Calibration of Modern
Neural Networks", 2017). The order of the classes, and so every accuracy, is unchanged. The NLL
is class-balanced, a T below 1 is moved towards 1 by its standard error, and a T that does not
help held-out folds of the split is not used (:func:`calibrate`; docs/calibration-and-keep.md has
the rule, docs/results.md the measurements).

LORT needs it more than most: it trains against ``(1 - delta) onehot + delta / K``, so with
delta 0.98 and K = 100 the target's own top probability is 0.0298 and a well-trained head's
softmax stays near that flat target: raw probabilities about K times too small on the predicted
class. Every re-trained classifier of a run is calibrated the same way, after its inference
rule and the run's flip averaging (the logits ``logits.npy`` holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lort.analysis import ECE_BINS, analyze, shot_groups
from lort.errors import InputError
from lort.files import finite_or_none

# The search keeps 1 / T inside these bounds: a separable validation split drives the NLL's
# minimum towards T = 0, a constant head towards T = infinity.
BETA_RANGE = (1e-3, 1e3)
NEWTON_STEPS = 100
# The held-out check of a fitted temperature: stratified folds of the validation split, whose
# class-balanced NLL at the folds' temperatures must be at least HELD_OUT_MARGIN (nats per
# image) below that at T = 1.
FOLDS = 5
HELD_OUT_MARGIN = 0.015
# A T below 1 (sharper probabilities) has log T moved this many of its standard errors towards
# 0: the head was chosen on the same split (its epoch, its settings), which flatters it, so the
# split asks for sharper probabilities than new rows bear; a T above 1 has no such bias. Both
# constants were chosen on the runs of docs/results.md's "Keep regret and calibration".
SHRINK_SE = 1.5


def _row_terms(
    z: np.ndarray, y: np.ndarray, beta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, for softmax(beta z): the NLL, its derivative in beta (the score) and its
    second derivative (the variance of z under the softmax)."""
    s = beta * z
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    total = p.sum(axis=1, keepdims=True)
    p /= total
    rows = np.arange(len(y))
    mean_z = (p * z).sum(axis=1)
    nll = np.log(total[:, 0]) - s[rows, y]
    return nll, mean_z - z[rows, y], (p * z * z).sum(axis=1) - mean_z**2


def _nll_and_derivatives(
    z: np.ndarray, y: np.ndarray, w: np.ndarray, beta: float
) -> tuple[float, float, float]:
    """NLL of softmax(beta z), rows weighted by ``w`` (summing to 1), and its first two
    derivatives in beta (convex: the second is the weighted variance of z under the softmax)."""
    nll, score, variance = _row_terms(z, y, beta)
    return float(w @ nll), float(w @ score), float(w @ variance)


def class_balanced(labels: np.ndarray) -> np.ndarray:
    """Row weights that give every class present the same total weight (summing to 1)."""
    y = np.asarray(labels, dtype=np.int64)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return 1.0 / (counts[inverse] * len(counts))


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """The T > 0 minimising the NLL of ``softmax(logits / T)`` on (``logits``, ``labels``),
    its rows weighted by ``weights`` (equal when None): Newton's method on beta = 1 / T (the
    NLL is convex in beta), a halved step whenever a step does not lower it, beta kept in
    :data:`BETA_RANGE`."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or len(z) == 0 or y.shape != (len(z),):
        raise InputError(f"calibration needs N x K logits and N labels, got {z.shape}, {y.shape}")
    if not np.isfinite(z).all():
        raise InputError("calibration needs finite logits")
    w = np.full(len(y), 1.0 / len(y)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    lo, hi = BETA_RANGE
    beta = 1.0
    nll, grad, hess = _nll_and_derivatives(z, y, w, beta)
    for _ in range(NEWTON_STEPS):
        step = -grad / hess if hess > 0 else -math.copysign(beta, grad)
        while True:
            trial = min(max(beta + step, lo), hi)
            t_nll, t_grad, t_hess = _nll_and_derivatives(z, y, w, trial)
            if t_nll <= nll or abs(step) < 1e-12:
                break
            step /= 2
        converged = abs(trial - beta) <= 1e-10 * max(1.0, beta)
        beta, nll, grad, hess = trial, t_nll, t_grad, t_hess
        if converged:
            break
    return 1.0 / beta


def log_t_standard_error(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    """The standard error of log T fitted by class-balanced NLL: the sandwich estimate of the
    fit's beta = 1 / T (the rows' weighted score variance over the squared curvature), by the
    delta method. It grows as the split shrinks, and with the weight of a class of few rows;
    infinite where the NLL has no curvature (constant logits)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    w = class_balanced(y)
    beta = 1.0 / t
    _, score, variance = _row_terms(z, y, beta)
    curvature = float(w @ variance)
    if curvature <= 0.0:
        return math.inf
    return math.sqrt(float((w * w) @ (score * score))) / curvature / beta


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def classwise_ece(logits: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Class-wise ECE (Kull et al., 2019): for each class k, the gap between the probability of
    k and how often k is the label, over all rows in equal-width bins (b/bins, (b+1)/bins] of
    that probability; the mean over the classes. The top-1 ECE looks only at the predicted
    class, so a tail class that is never predicted hides there."""
    p = _softmax(logits)
    y = np.asarray(labels)
    total = 0.0
    for k in range(p.shape[1]):
        b = np.clip(np.ceil(p[:, k] * bins).astype(np.int64) - 1, 0, bins - 1)
        conf = np.bincount(b, weights=p[:, k], minlength=bins)
        hits = np.bincount(b, weights=(y == k).astype(np.float64), minlength=bins)
        total += float(np.abs(conf - hits).sum()) / len(y)
    return total / p.shape[1]


def _scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    a = analyze(logits, labels, hessian="none")
    return {
        "nll": a.nll,
        "ece": a.ece,
        "mean_top_probability": float(_softmax(logits).max(axis=1).mean()),
    }


def scores(
    logits: np.ndarray, labels: np.ndarray, counts: np.ndarray | None = None
) -> dict[str, Any]:
    """NLL, top-1 ECE, mean top probability and class-wise ECE of ``softmax(logits)``, and with
    the training ``counts`` the first three on the rows of each many / medium / few group
    (None for a group without rows)."""
    out: dict[str, Any] = _scores(logits, labels) | {"classwise_ece": classwise_ece(logits, labels)}
    if counts is not None:
        out["groups"] = {}
        for name, classes in shot_groups(counts).items():
            rows = np.isin(labels, classes)
            out["groups"][name] = _scores(logits[rows], labels[rows]) if rows.any() else None
    return out


@dataclass(frozen=True)
class Calibration:
    """A classifier's temperature (None: the run has no validation split to fit it on; 1: the
    fitted one failed the held-out check) and its :func:`scores` on each split before and
    after."""

    temperature: float | None
    fitted_on: str
    splits: dict[str, dict[str, dict[str, Any]]]  # split -> before / after -> scores
    check: dict[str, float | None] | None = None  # the held-out check of the fitted temperature

    def to_dict(self) -> dict[str, Any]:
        out = {"temperature": self.temperature, "fitted_on": self.fitted_on, **self.splits}
        return out | ({} if self.check is None else {"check": self.check})


def folds(labels: np.ndarray, k: int = FOLDS) -> np.ndarray:
    """A fold in 0..k-1 for each row, stratified: each class's rows, in a seeded random order,
    dealt round the folds from a seeded random first fold."""
    y = np.asarray(labels)
    rng = np.random.default_rng(0)
    fold = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rng.shuffle(rows)
        fold[rows] = (np.arange(len(rows)) + rng.integers(k)) % k
    return fold


def _balanced_nll(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return _nll_and_derivatives(z, y, w, 1.0)[0]


def held_out_nll(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The class-balanced NLL of the validation split's rows, each scaled by the temperature
    fitted on the other folds (:func:`folds`), and at T = 1: whether fitting a temperature on
    a split this size helps rows it was not fitted on. Where the other folds are separable,
    their NLL falls as T does down to :data:`BETA_RANGE`'s bound, which is no temperature to
    test: that fold's rows count at T = 1 on both sides."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    w = class_balanced(y)
    fold = folds(y)
    scaled = z.copy()
    for k in range(FOLDS):
        rest = fold != k
        if rest.all() or not rest.any():
            continue
        t = fit_temperature(z[rest], y[rest], class_balanced(y[rest]))
        if not any(math.isclose(1.0 / t, bound, rel_tol=1e-9) for bound in BETA_RANGE):
            scaled[~rest] /= t
    return _balanced_nll(scaled, y, w), _balanced_nll(z, y, w)


def calibrate(
    val: tuple[np.ndarray, np.ndarray] | None,
    test: tuple[np.ndarray, np.ndarray],
    counts: np.ndarray | None = None,
) -> Calibration:
    """The temperature of ``val`` (logits, labels) and the :func:`scores` of both splits at T
    and at 1 (per many / medium / few group of the training ``counts`` when given). T minimises
    the class-balanced NLL on validation (every class weighs the same, as in the class-mean
    accuracy every choice is made on and the balanced test sets), below 1 moved towards 1 by
    :data:`SHRINK_SE` standard errors of log T (:func:`log_t_standard_error`), and used only
    where :func:`held_out_nll` says the fit lowers that NLL by at least :data:`HELD_OUT_MARGIN`
    on rows it was not fitted on; otherwise T = 1 (a small split's temperature made calibration
    worse). With no validation split, T stays unset and only the test split's raw scores are
    given."""
    if val is None:
        return Calibration(
            None,
            "not calibrated: the run has no validation split to fit a temperature on "
            "(its probabilities are the raw softmax)",
            {"test": {"before": scores(*test, counts)}},
        )
    z, y = val
    fitted = fit_temperature(z, y, class_balanced(y))
    error = log_t_standard_error(z, y, fitted)
    log_t = math.log(fitted)
    shrunk = math.exp(min(0.0, log_t + SHRINK_SE * error)) if log_t < 0 else fitted
    held_out, raw = held_out_nll(z, y)
    check = f"{FOLDS}-fold held-out NLL {raw:.4g} at T = 1, {held_out:.4g} fitted"
    helps = held_out <= raw - HELD_OUT_MARGIN
    t = shrunk if helps else 1.0
    how = f"validation split ({len(y):,} images), by class-balanced NLL"
    if not helps:
        how += (
            f"; T = 1 kept (the fitted {fitted:.3g} did not lower the NLL of held-out rows by "
            f"{HELD_OUT_MARGIN:g}: {check})"
        )
    elif t != fitted:
        how += f" ({fitted:.3g} moved towards 1 by {SHRINK_SE:g} standard errors of log T, "
        how += f"{error:.2g})"
    splits = {
        name: {"before": scores(a, b, counts), "after": scores(a / t, b, counts)}
        for name, (a, b) in (("val", val), ("test", test))
    }
    return Calibration(
        t,
        how,
        splits,
        {
            "fitted": fitted,
            "log_t_standard_error": finite_or_none(error),  # None: a flat NLL, no spread
            "held_out_nll": held_out,
            "held_out_nll_at_1": raw,
            "folds": FOLDS,
        },
    )
