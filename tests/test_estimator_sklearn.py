"""LortClassifier as scikit-learn expects it: scikit-learn's own estimator checks, its input
and label validation, calibrated probabilities equal to ``lort predict``'s, and a fit that
trains only what it returns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import lort
from cli_helpers import ok

# The checks of scikit-learn's suite that cannot apply to lort, each with the reason; none
# today (docs/estimator.md says so). The array-API check is skipped by scikit-learn itself
# unless SCIPY_ARRAY_API is set.
EXPECTED_FAILED: dict[str, str] = {}
SMALL = {"epochs1": 5, "epochs2": 5, "seed": 0}


@parametrize_with_checks([lort.LortClassifier()], expected_failed_checks=lambda _: EXPECTED_FAILED)
def test_scikit_learn_estimator_checks(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


def _digits() -> tuple[np.ndarray, ...]:
    """Long-tailed digits: a training set of 64 down to 10 per class, validation, test."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(1)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(y[:1200] == c))[: 60 // (c + 1) + 4] for c in range(10)]
    )
    return X[keep], y[keep], X[1200:1400], y[1200:1400], X[1400:], y[1400:]


@pytest.fixture(scope="module")
def fitted() -> lort.LortClassifier:
    x, y, xv, yv, *_ = _digits()
    return lort.LortClassifier(**SMALL).fit(x, y, xv, yv)


def test_predict_proba_is_lort_predicts_calibrated_probabilities(
    tmp_path: Path, fitted: lort.LortClassifier
) -> None:
    """The same arrays through `lort fit --dataset features` and `lort predict`: the estimator's
    probabilities are the command's, softmax(z / T) with the run's temperature."""
    x, y, xv, yv, xt, yt = _digits()
    data = tmp_path / "features"
    data.mkdir()
    for split, (a, b) in {"train": (x, y), "val": (xv, yv), "test": (xt, yt)}.items():
        np.save(data / f"{split}_features.npy", a.astype(np.float32))
        np.save(data / f"{split}_labels.npy", b)
    ok("fit", "--dataset", "features", "--data-root", data, "--out", tmp_path / "run",
       "--epochs1", "5", "--epochs2", "5", "--seed", "0")  # fmt: skip
    predicted = lort.open_run(tmp_path / "run").predict([data / "test_features.npy"], top_k=10)
    theirs = np.zeros((len(xt), 10))
    np.put_along_axis(theirs, predicted.indices(), predicted.probabilities(), axis=1)

    temperature = fitted.run_.temperature
    assert temperature is not None and abs(temperature - 1.0) > 0.05  # calibration matters
    np.testing.assert_allclose(fitted.predict_proba(xt), theirs, atol=1e-6)
    np.testing.assert_allclose(fitted.predict_proba(xt).sum(1), 1.0, rtol=1e-6)


def test_labels_are_validated_as_scikit_learn_does() -> None:
    x, y, *_ = _digits()
    with pytest.raises(ValueError, match="Unknown label type"):
        lort.LortClassifier().fit(x, y + np.linspace(0, 0.5, len(y)))
    with pytest.raises(ValueError, match="NaN"):
        lort.LortClassifier().fit(x, np.where(y == 3, np.nan, y))
    with pytest.raises(ValueError, match="at least 2 classes"):
        lort.LortClassifier().fit(x[:1], y[:1])
    with pytest.raises(ValueError, match="together"):
        lort.LortClassifier().fit(x, y, x)


def _with_a_word(x: np.ndarray) -> np.ndarray:
    words = x.astype(object)
    words[0, 0] = "a"
    return words


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_with_a_word, "could not convert"),
        (lambda x: x + 1j, "Complex data not supported"),
        (lambda x: x[:, 0], "Expected 2D array, got 1D array"),
        (scipy.sparse.csr_matrix, "Sparse data was passed"),
    ],
)
def test_features_are_validated_as_scikit_learn_does(bad, message) -> None:  # type: ignore[no-untyped-def]
    x, y, *_ = _digits()
    with pytest.raises((ValueError, TypeError), match=message):
        lort.LortClassifier().fit(bad(x), y)
    with pytest.raises(ValueError, match="0 sample"):
        lort.LortClassifier().fit(x[:0], y[:0])


def test_a_fitted_classifier_checks_what_it_predicts(fitted: lort.LortClassifier) -> None:
    x, *_ = _digits()
    with pytest.raises(ValueError, match="X has 10 features, but LortClassifier is expecting 64"):
        fitted.predict(x[:, :10])
    with pytest.raises(NotFittedError):
        lort.LortClassifier().predict(x)
    with pytest.raises(NotFittedError):
        lort.LortClassifier().predict_proba(x)


def test_labels_stay_in_memory_and_y_as_a_column_is_ravelled() -> None:
    """A label holding a newline (which a label file split into two names) is a class like any
    other; y of shape (n, 1) is ravelled with scikit-learn's DataConversionWarning."""
    x, y, xv, yv, *_ = _digits()
    names = np.array([f"digit\n{c}" for c in range(10)], dtype=object)
    with pytest.warns(DataConversionWarning):
        clf = lort.LortClassifier(method="ce", epochs1=3, epochs2=3).fit(
            x, names[y][:, None], xv, names[yv]
        )
    assert list(clf.classes_) == sorted(names)
    assert set(clf.predict(xv)) <= set(names)
    with pytest.raises(ValueError, match="a class that y does not"):
        lort.LortClassifier(method="ce").fit(x, names[y], xv, np.full(len(yv), "nine"))


def test_two_classes_give_one_decision_value_per_row() -> None:
    """Binary decision_function is (n,): the margin of classes_[1], so roc_auc scores it."""
    x, y, xv, yv, xt, yt = _digits()
    two, two_v, two_t = (np.isin(a, (3, 8)) for a in (y, yv, yt))
    clf = lort.LortClassifier().fit(x[two], y[two], xv[two_v], yv[two_v])
    margins = clf.decision_function(xt[two_t])
    assert margins.shape == (int(two_t.sum()),)
    assert np.array_equal(clf.predict(xt[two_t]), clf.classes_[(margins > 0).astype(int)])
    assert roc_auc_score(yt[two_t] == 8, margins) > 0.9


def test_read_only_arrays_give_no_warning() -> None:
    """torch warns once per process about a read-only array: a fresh process, warnings as
    errors, read-only inputs (as a memory-mapped file gives them)."""
    code = (
        "import warnings; warnings.simplefilter('error'); import numpy as np, lort\n"
        "from sklearn.datasets import load_digits\n"
        "X, y = load_digits(return_X_y=True); X.setflags(write=False); y.setflags(write=False)\n"
        "clf = lort.LortClassifier(method='ce', epochs1=2, epochs2=2)\n"
        "clf.fit(X[:1000], y[:1000], X[1000:1300], y[1000:1300]).predict_proba(X[1300:])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]


def test_val_fraction_is_a_parameter_and_errors_name_it() -> None:
    x, y, *_ = _digits()
    clf = lort.LortClassifier(val_fraction=0.3, **SMALL).fit(x, y)
    assert clf.report_["config"]["val_fraction"] == 0.3
    with pytest.raises(ValueError, match="val_fraction") as e:
        lort.LortClassifier().fit(x[:2], [0, 1])
    assert "--" not in str(e.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"stage2_stop": "val", "val_fraction": 0.0, "smooth": 0.9},
            "give the run a validation split (X_val and y_val, or val_fraction > 0), or use "
            "stage2_stop last",
        ),
        ({"threads": 0}, "threads must be between 1 and"),
        ({"lr1": -1.0}, "lr1 is stage1's lr: it must be finite, lr > 0, got -1.0"),
        ({"wd2": float("inf")}, "wd2 is stage2's weight_decay"),
        ({"smooth": 1.5}, "smooth must lie in [0, 1)"),
        (
            {"method": "auto", "smooth": 0.9, "val_fraction": 0.0, "epochs1": 2, "epochs2": 2},
            "method auto chooses a method on the validation split, and the run has none: give it "
            "one (X_val and y_val, or val_fraction > 0), or name a method",
        ),
    ],
)
def test_lort_fits_errors_name_the_estimators_parameters(
    options: dict[str, object], message: str
) -> None:
    """Not the command line's flags (``--stage2-stop``, ``--val-split``, ``--threads``)."""
    x, y, *_ = _digits()
    with pytest.raises(ValueError) as e:
        lort.LortClassifier(**options).fit(x, y)  # type: ignore[arg-type]
    assert message in str(e.value) and "--" not in str(e.value)


def test_method_auto_keeps_the_compared_method_validation_is_sure_of() -> None:
    """``lort fit --method auto`` on arrays: the tuned comparison of the twelve methods, then
    the kept one and how sure validation is of it in ``report_`` (20 to 40 s on 122 rows)."""
    x, y, xv, yv, *_ = _digits()
    three, three_v = y < 3, yv < 3
    clf = lort.LortClassifier(method="auto", epochs1=3, epochs2=2)
    clf.fit(x[three], y[three], xv[three_v], yv[three_v])
    validation = clf.report_["kept"]["validation"]
    assert validation["own"] == "lort" and validation["images"] == int(three_v.sum())
    kept = validation["winner"] if validation["told_apart"] else validation["own"]
    assert clf.report_["method"]["name"] == kept
    assert set(clf.predict(xv[three_v])) <= {0, 1, 2}
    assert clf.report_["timings"]["other_s"] > 0  # the comparison and keep


def test_report_says_which_rows_its_numbers_are_on(fitted: lort.LortClassifier) -> None:
    x, y, *_ = _digits()
    assert fitted.report_["evaluated_on"]["split"] == "val"
    assert "files" not in fitted.report_  # the run folder's, removed after the fit
    alone = lort.LortClassifier(method="ce", epochs1=2, epochs2=2).fit(x, y)
    assert alone.report_["evaluated_on"]["split"] == "train"
    assert "training numbers" in alone.report_["evaluated_on"]["why"]


def test_the_estimator_trains_only_what_it_returns(fitted: lort.LortClassifier) -> None:
    """No baselines (the command's yardstick, never returned), and the time accounted for."""
    assert list(fitted.report_["baselines"]) == ["method"]
    timings = fitted.report_["timings"]
    for stage in ("stage1_s", "stage2_s", "calibration_s", "arrays_s", "other_s"):
        assert timings[stage] >= 0.0
    assert sum(v for k, v in timings.items() if k != "total_s") == pytest.approx(
        timings["total_s"], rel=1e-6
    )


def test_baselines_are_an_option_of_lort_fit(tmp_path: Path) -> None:
    """On by default, as the command always trained them; --no-baselines trains the method
    alone."""
    x, y, xv, yv, *_ = _digits()
    data = tmp_path / "features"
    data.mkdir()
    for split, (a, b) in {"train": (x, y), "val": (xv, yv), "test": (xv, yv)}.items():
        np.save(data / f"{split}_features.npy", a.astype(np.float32))
        np.save(data / f"{split}_labels.npy", b)
    common = ("--dataset", "features", "--data-root", data, "--epochs1", "2", "--epochs2", "2")
    ok("fit", *common, "--out", tmp_path / "with")
    ok("fit", *common, "--out", tmp_path / "without", "--no-baselines")
    with_ = json.loads((tmp_path / "with/report.json").read_text())["baselines"]
    without = json.loads((tmp_path / "without/report.json").read_text())["baselines"]
    assert set(with_) == {"method", "ce", "logit-adjust"} and list(without) == ["method"]
    assert "baselines_s" in json.loads((tmp_path / "with/report.json").read_text())["timings"]
