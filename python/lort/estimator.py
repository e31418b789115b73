"""A scikit-learn estimator for features already in memory: ``lort fit --dataset features`` on
arrays.

    clf = lort.LortClassifier(method="lort").fit(X, y, X_val, y_val)
    clf.predict(X_test); clf.predict_proba(X_test); clf.score(X_test, y_test)

``fit`` checks the arrays as scikit-learn's own estimators do (``validate_data``,
``check_classification_targets``), writes them with the class indices (the labels themselves
stay in memory, in ``classes_``) in the ``features`` layout to a temporary folder, runs the
same ``lort fit`` (a linear stage 1 with cross-entropy and weight decay, then the method's
stage 2, stopped and tuned on the validation split as the command does; ``method="auto"``
then keeps the best of the tuned comparison, as ``lort fit --method auto``) into a temporary
run folder, keeps the trained classifier in memory and removes both folders. The numbers are
therefore those of the command on the same arrays, less what the estimator does not return:
the CE and logit-adjustment baselines the command prints and the reliability diagram. Any of
the twelve methods or a composition (``"lort+logit-adjust"``) may be named; ``None`` leaves an
option at ``lort fit``'s default. docs/estimator.md has the details.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from lort.data.feature_files import check_rows
from lort.errors import InputError, OptionError

# The dtypes X is taken in without a copy; any other numeric dtype is converted to float32.
_FLOATS = (np.float32, np.float64)
# The options passed on to ``lort fit`` (None: its default).
_OPTIONS: tuple[str, ...] = ("method", "smooth", "tau", "stage2_stop", "val_fraction", "seed")
_OPTIONS += ("epochs1", "lr1", "wd1", "batch1", "epochs2", "lr2", "wd2", "batch2")
# How an error of ``lort fit`` names an option the estimator has no parameter for; the others
# are its parameters, spelled as the option's key.
_SPELLED = {"val_split": "X_val and y_val"}


class LortClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Stage 1 and stage 2 of lort on in-memory features (rows x feature dim); class labels
    may be any values scikit-learn takes as classes (``classes_`` holds them, sorted).

    ``val_fraction`` is the share of each class's training rows carved for validation when
    ``X_val`` is not given (None: ``lort fit``'s rule, 20% when ``smooth`` is auto)."""

    def __init__(
        self,
        method: str = "lort",
        *,
        smooth: float | str | None = None,
        tau: float | str | None = None,
        stage2_stop: str | None = None,
        val_fraction: float | None = None,
        epochs1: int | None = None,
        lr1: float | None = None,
        wd1: float | None = None,
        batch1: int | None = None,
        epochs2: int | None = None,
        lr2: float | None = None,
        wd2: float | None = None,
        batch2: int | None = None,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        self.method = method
        self.smooth = smooth
        self.tau = tau
        self.stage2_stop = stage2_stop
        self.val_fraction = val_fraction
        self.epochs1 = epochs1
        self.lr1 = lr1
        self.wd1 = wd1
        self.batch1 = batch1
        self.epochs2 = epochs2
        self.lr2 = lr2
        self.wd2 = wd2
        self.batch2 = batch2
        self.seed = seed
        self.threads = threads

    def fit(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        X_val: npt.ArrayLike | None = None,
        y_val: npt.ArrayLike | None = None,
    ) -> LortClassifier:
        """Train on (``X``, ``y``); choices on validation use (``X_val``, ``y_val``) when given,
        else the split carved from the training rows (``val_fraction``)."""
        from lort.api import fit
        from lort.run.trained import open_trained

        start = time.perf_counter()
        x, labels = validate_data(self, X, y, dtype=_FLOATS)
        check_classification_targets(labels)
        classes, codes = np.unique(labels, return_inverse=True)
        if classes.size < 2:
            raise ValueError(
                f"LortClassifier needs at least 2 classes in y, got 1 class ({classes[0]!r})"
            )
        splits = {"train": (_float32(x, "X"), codes)}
        if (X_val is None) != (y_val is None):
            raise ValueError("give X_val and y_val together")
        if X_val is None and np.bincount(codes).max() < 2:
            raise ValueError(
                "every class of y has a single row, so no validation rows can be carved from X "
                "(val_fraction takes them from classes of 2 rows or more): give X_val and y_val"
            )
        if X_val is not None:
            xv = validate_data(self, X_val, reset=False, dtype=_FLOATS)
            yv = column_or_1d(y_val, warn=True)
            check_consistent_length(xv, yv)
            unknown = ~np.isin(yv, classes)
            if unknown.any():
                raise ValueError(f"y_val holds {yv[unknown][0]!r}, a class that y does not")
            splits["val"] = (_float32(xv, "X_val"), np.searchsorted(classes, yv))
        # The run's test split is only evaluated, never trained or chosen on: report_ says
        # which rows its numbers are on.
        evaluated = "val" if "val" in splits else "train"
        splits["test"] = splits[evaluated]
        options = {n: getattr(self, n) for n in _OPTIONS if getattr(self, n) is not None}
        with tempfile.TemporaryDirectory(prefix="lort-estimator-") as tmp:
            data = Path(tmp) / "features"
            data.mkdir()
            for split, (features, split_codes) in splits.items():
                np.save(data / f"{split}_features.npy", features)
                np.save(data / f"{split}_labels.npy", split_codes.astype(np.int64))
            arrays_s = time.perf_counter() - start
            try:
                run = fit(
                    Path(tmp) / "run",
                    dataset="features",
                    data_root=str(data),
                    threads=self.threads,
                    figures=False,
                    baselines=False,
                    **options,
                )
            except OptionError as e:  # named by this estimator's parameters
                raise InputError(e.spelled(lambda key: _SPELLED.get(key, key))) from None
            self.run_ = open_trained(run.path)
        self.classes_ = classes
        self.report_ = _report(run.report, evaluated, len(splits["test"][1]))
        timings = self.report_.setdefault("timings", {})
        total = time.perf_counter() - start
        inside = sum(v for k, v in timings.items() if k.endswith("_s") and "_per_" not in k)
        timings |= {"arrays_s": arrays_s, "other_s": total - arrays_s - inside, "total_s": total}
        return self

    def decision_function(self, X: npt.ArrayLike) -> np.ndarray:
        """Logits after the method's inference rule (tau-norm, logit adjustment), as the run's
        ``logits.npy`` holds them: n x K, or for two classes the n margins of ``classes_[1]``
        over ``classes_[0]``."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X: npt.ArrayLike) -> np.ndarray:
        """Calibrated probabilities: the softmax of the logits over the run's temperature
        (fitted on the validation split), as ``lort predict`` gives; the raw softmax when the
        run had no validation split."""
        z = torch.from_numpy(self._logits(X))
        return self.run_.probabilities(z).numpy()

    def predict(self, X: npt.ArrayLike) -> np.ndarray:
        best = self._logits(X).argmax(axis=1)
        return self.classes_[best]

    def _logits(self, X: npt.ArrayLike) -> np.ndarray:
        check_is_fitted(self, "run_")
        x = _float32(validate_data(self, X, reset=False, dtype=_FLOATS), "X")
        return self.run_.logits(torch.from_numpy(x), None).numpy()


def _float32(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as C-ordered, writable float32 (torch takes no read-only array), its magnitude
    checked as a features file's is."""
    x = np.require(x, np.float32, ["C", "W"])
    check_rows(x, name)
    return x


def _report(report: dict[str, Any], evaluated: str, rows: int) -> dict[str, Any]:
    """The run's report, less the files of its folder (removed after the fit), with the rows
    its numbers (results, calibration) are on."""
    why = {
        "val": "X_val, y_val: the rows the run chose its epoch, delta and temperature on, "
        "so they flatter the classifier; score held-out rows for an unbiased estimate",
        "train": "X, y: no held-out rows were given, so these are training numbers",
    }[evaluated]
    kept = {k: v for k, v in report.items() if k != "files"}
    return kept | {"evaluated_on": {"split": evaluated, "rows": rows, "why": why}}
