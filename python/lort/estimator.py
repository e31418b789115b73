"""A scikit-learn estimator for features already in memory: ``lort fit --dataset features`` on
arrays.

    clf = lort.LortClassifier(method="lort").fit(X, y, X_val, y_val)
    clf.predict(X_test); clf.predict_proba(X_test); clf.score(X_test, y_test)

``fit`` writes the arrays in the ``features`` layout to a temporary folder, runs the same
``lort fit`` (a linear stage 1 with cross-entropy and weight decay, then the method's stage 2,
stopped and tuned on the validation split as the command does) into a temporary run folder,
keeps the trained classifier in memory and removes both folders. The numbers are therefore
those of the command on the same arrays. Any of the twelve methods or a composition
(``"lort+logit-adjust"``) may be named; ``None`` leaves an option at ``lort fit``'s default.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from lort.errors import InputError


class LortClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Stage 1 and stage 2 of lort on in-memory features (rows x feature dim); class labels
    may be any sortable values (``classes_`` holds them)."""

    def __init__(
        self,
        method: str = "lort",
        *,
        smooth: float | str | None = None,
        tau: float | str | None = None,
        stage2_stop: str | None = None,
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

    def _options(self) -> dict[str, Any]:
        names: tuple[str, ...] = ("method", "smooth", "tau", "stage2_stop", "seed")
        names += ("epochs1", "lr1", "wd1", "batch1", "epochs2", "lr2", "wd2", "batch2")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def fit(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        X_val: npt.ArrayLike | None = None,
        y_val: npt.ArrayLike | None = None,
    ) -> LortClassifier:
        """Train on (``X``, ``y``); choices on validation use (``X_val``, ``y_val``) when given,
        else the split ``lort fit`` carves from the training rows."""
        from lort.api import fit
        from lort.run.trained import open_trained

        x = _features(X, "X")
        labels = np.asarray(y)
        if labels.shape != (len(x),):
            raise InputError(f"y must hold one label per row of X ({len(x)}), got {labels.shape}")
        classes = np.unique(labels)
        splits = {"train": (x, labels)}
        if (X_val is None) != (y_val is None):
            raise InputError("give X_val and y_val together")
        if X_val is not None:
            xv, yv = _features(X_val, "X_val"), np.asarray(y_val)
            if xv.shape[1] != x.shape[1] or yv.shape != (len(xv),):
                raise InputError("X_val must have X's columns and y_val one label per row")
            if not np.isin(yv, classes).all():
                raise InputError("y_val holds a class that y does not")
            splits["val"] = (xv, yv)
        # The test split of the run is only evaluated, never trained or chosen on.
        splits["test"] = splits.get("val", splits["train"])
        with tempfile.TemporaryDirectory(prefix="lort-estimator-") as tmp:
            data = Path(tmp) / "features"
            data.mkdir()
            for split, (features, split_labels) in splits.items():
                np.save(data / f"{split}_features.npy", features)
                np.save(data / f"{split}_labels.npy", np.searchsorted(classes, split_labels))
            (data / "class_names.txt").write_text("".join(f"{c}\n" for c in classes))
            run = fit(
                Path(tmp) / "run",
                dataset="features",
                data_root=str(data),
                threads=self.threads,
                **self._options(),
            )
            self.report_ = run.report
            self.run_ = open_trained(run.path)
        self.classes_ = classes
        self.n_features_in_ = x.shape[1]
        return self

    def decision_function(self, X: npt.ArrayLike) -> np.ndarray:
        """Logits after the method's inference rule (tau-norm, logit adjustment), as the run's
        ``logits.npy`` holds them."""
        if not hasattr(self, "run_"):
            raise InputError("this LortClassifier is not fitted yet: call fit(X, y) first")
        x = _features(X, "X")
        if x.shape[1] != self.n_features_in_:
            raise InputError(
                f"X has {x.shape[1]} columns; the classifier takes {self.n_features_in_}"
            )
        return self.run_.logits(torch.from_numpy(x), None).numpy()

    def predict_proba(self, X: npt.ArrayLike) -> np.ndarray:
        """The softmax of :meth:`decision_function`, as ``lort predict`` gives."""
        return torch.softmax(torch.from_numpy(self.decision_function(X)), dim=1).numpy()

    def predict(self, X: npt.ArrayLike) -> np.ndarray:
        best = self.decision_function(X).argmax(axis=1)
        return self.classes_[best]


def _features(X: npt.ArrayLike, name: str) -> np.ndarray:
    x = np.asarray(X)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0 or x.dtype.kind not in "fiu":
        raise InputError(f"{name} must be a non-empty 2-D array of numbers, got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError(f"{name} holds NaN or infinite values")
    return x
