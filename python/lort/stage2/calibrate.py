"""Temperature scaling: one scalar T fitted on the validation split by NLL, so that
``softmax(z / T)`` are probabilities one can act on (Guo et al., "On Calibration of Modern
Neural Networks", 2017). The order of the classes, and so every accuracy, is unchanged.

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

from lort.analysis import analyze
from lort.errors import InputError

# The search keeps 1 / T inside these bounds: a separable validation split drives the NLL's
# minimum towards T = 0, a constant head towards T = infinity.
BETA_RANGE = (1e-3, 1e3)
NEWTON_STEPS = 100


def _nll_and_derivatives(z: np.ndarray, y: np.ndarray, beta: float) -> tuple[float, float, float]:
    """NLL of softmax(beta z) and its first two derivatives in beta (convex: the second is the
    mean variance of z under the softmax)."""
    s = beta * z
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    total = p.sum(axis=1, keepdims=True)
    p /= total
    zy = z[np.arange(len(y)), y]
    nll = float(np.mean(np.log(total[:, 0]) - s[np.arange(len(y)), y]))
    mean_z = (p * z).sum(axis=1)
    grad = float(np.mean(mean_z - zy))
    hess = float(np.mean((p * z * z).sum(axis=1) - mean_z**2))
    return nll, grad, hess


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of ``softmax(logits / T)`` on (``logits``, ``labels``):
    Newton's method on beta = 1 / T (the NLL is convex in beta), a halved step whenever a step
    does not lower it, beta kept in :data:`BETA_RANGE`."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.ndim != 2 or len(z) == 0 or y.shape != (len(z),):
        raise InputError(f"calibration needs N x K logits and N labels, got {z.shape}, {y.shape}")
    if not np.isfinite(z).all():
        raise InputError("calibration needs finite logits")
    lo, hi = BETA_RANGE
    beta = 1.0
    nll, grad, hess = _nll_and_derivatives(z, y, beta)
    for _ in range(NEWTON_STEPS):
        step = -grad / hess if hess > 0 else -math.copysign(beta, grad)
        while True:
            trial = min(max(beta + step, lo), hi)
            t_nll, t_grad, t_hess = _nll_and_derivatives(z, y, trial)
            if t_nll <= nll or abs(step) < 1e-12:
                break
            step /= 2
        converged = abs(trial - beta) <= 1e-10 * max(1.0, beta)
        beta, nll, grad, hess = trial, t_nll, t_grad, t_hess
        if converged:
            break
    return 1.0 / beta


def _scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    a = analyze(logits, labels, hessian="none")
    return {"nll": a.nll, "ece": a.ece, "mean_top_probability": _mean_top(logits)}


def _mean_top(logits: np.ndarray) -> float:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(1.0 / np.exp(z).sum(axis=1)))


@dataclass(frozen=True)
class Calibration:
    """A classifier's temperature (None: the run has no validation split to fit it on) and
    its NLL, ECE and mean top probability on each split before and after."""

    temperature: float | None
    fitted_on: str
    splits: dict[str, dict[str, dict[str, float]]]  # split -> before / after -> scores

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "fitted_on": self.fitted_on, **self.splits}


def calibrate(
    val: tuple[np.ndarray, np.ndarray] | None, test: tuple[np.ndarray, np.ndarray]
) -> Calibration:
    """T fitted on ``val`` (logits, labels) and the scores of both splits at T and at 1; with
    no validation split, T stays unset and only the test split's raw scores are given."""
    if val is None:
        return Calibration(
            None,
            "not calibrated: the run has no validation split to fit a temperature on "
            "(its probabilities are the raw softmax)",
            {"test": {"before": _scores(*test)}},
        )
    t = fit_temperature(*val)
    splits = {
        name: {"before": _scores(z, y), "after": _scores(z / t, y)}
        for name, (z, y) in (("val", val), ("test", test))
    }
    return Calibration(t, f"validation split ({len(val[1]):,} images), by NLL", splits)
