"""The public Python API: docs/api.md's examples run as written, the calls give the commands'
numbers, and ``import lort`` stays light."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import lort
from cli_helpers import ok

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
SMALL = ("--epochs1", "5", "--epochs2", "5", "--seed", "0")


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_api_page_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _blocks()
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), namespace)  # the page's own code, nothing else
    # What the page's first block made is the folder `lort fit --out` would have made.
    run = namespace["run"]
    assert isinstance(run, lort.Run)
    table = namespace["table"]
    assert Path("runs/api-demo/compare-lort_ce_logit-adjust.csv") in table.files
    assert all(f.is_file() for f in table.files)
    assert namespace["clf"].score(namespace["X_test"], namespace["y_test"]) > 0.5


def test_fit_and_compare_give_the_commands_numbers(tmp_path: Path) -> None:
    ok("fit", "--out", tmp_path / "cli", *SMALL)
    run = lort.fit(tmp_path / "api", epochs1=5, epochs2=5, seed=0)
    assert np.array_equal(np.load(tmp_path / "cli/logits.npy"), np.load(run.path / "logits.npy"))
    assert run.report["smooth"] == json.loads((tmp_path / "cli/report.json").read_text())["smooth"]

    ok("compare", tmp_path / "cli", "--methods", "lort,ce", "--seeds", "1")
    table = run.compare(methods=["lort", "ce"])
    with open(tmp_path / "cli/compare-lort_ce.csv") as f:
        header = f.readline().strip().split(",")
        rows = [line.strip().split(",") for line in f]
    assert list(table.columns) == header
    for mine, theirs in zip(table.rows, rows, strict=True):
        assert mine[0] == theirs[0]
        for a, b in zip(mine[1:], theirs[1:], strict=True):
            assert (a is None and b == "") or float(a) == pytest.approx(float(b), rel=1e-12)

    opened = lort.open_run(tmp_path / "cli")
    assert opened.method == "lort" and opened.config.seed == 0
    assert opened.analysis.accuracy == pytest.approx(run.analysis.accuracy)


def test_compare_takes_the_search_as_the_command_does(tmp_path: Path) -> None:
    """``search=`` is ``lort compare --search``: the points record it, the notes count its
    head-epochs, and a bad value is one InputError before anything is trained."""
    run = lort.fit(tmp_path / "run", epochs1=3, epochs2=4, seed=0)
    point = run.path / "compare" / "ce-seed0-protocol-tuned.json"
    for search in ("halving", "full"):
        table = run.compare(methods=["ce"], search=search, figures=False)
        assert json.loads(point.read_text())["result"]["search"]["name"] == search
        assert any(n.startswith(f"{search} search:") for n in table.notes), table.notes
    with pytest.raises(lort.InputError, match=r"^search must be one of halving, full, got 'q'$"):
        lort.compare([run], ["ce"], search="q")  # type: ignore[arg-type]


def test_fit_auto_draws_no_figures_when_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``figures=False`` reaches the comparison ``method="auto"`` runs (the estimator's
    auto spent a fifth of its time drawing the comparison's figures)."""
    from lort.experiments import keep

    seen: dict[str, object] = {}

    def compare(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise RuntimeError("stopped after the fit")

    monkeypatch.setattr(keep, "compare", compare)
    with pytest.raises(RuntimeError, match="stopped after the fit"):
        lort.fit(tmp_path / "r", method="auto", figures=False, epochs1=1, epochs2=1)
    assert seen["figures"] is False


def test_open_run_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(lort.InputError):
        lort.open_run(tmp_path)


def test_bad_options_raise_one_input_error(tmp_path: Path) -> None:
    with pytest.raises(lort.InputError, match="smooth"):
        lort.fit(tmp_path / "r", smooth=3.0)
    assert not (tmp_path / "r").exists()


def _digits_features() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(1)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(y[:1200] == c))[: 60 // (c + 1) + 4] for c in range(10)]
    )
    return X[keep], y[keep], X[1200:1400], y[1200:1400], X[1400:], y[1400:]


@pytest.mark.parametrize("method", ["lort", "tau-norm", "lort+logit-adjust"])
def test_the_estimator_gives_the_commands_numbers(tmp_path: Path, method: str) -> None:
    """The same arrays through `lort fit --dataset features` and through LortClassifier."""
    x, y, xv, yv, xt, yt = _digits_features()
    data = tmp_path / "features"
    data.mkdir()
    for split, (a, b) in {"train": (x, y), "val": (xv, yv), "test": (xt, yt)}.items():
        np.save(data / f"{split}_features.npy", a.astype(np.float32))
        np.save(data / f"{split}_labels.npy", b)
    ok("fit", "--dataset", "features", "--data-root", data, "--out", tmp_path / "run",
       "--method", method, "--seed", "0")  # fmt: skip

    clf = lort.LortClassifier(method=method, seed=0).fit(x, y, xv, yv)
    logits = clf.decision_function(xt)
    np.testing.assert_allclose(logits, np.load(tmp_path / "run/logits.npy"), rtol=1e-5, atol=1e-6)
    assert np.array_equal(clf.predict(xt), clf.classes_[logits.argmax(1)])
    np.testing.assert_allclose(clf.predict_proba(xt).sum(1), 1.0, rtol=1e-5)
    assert clf.score(xt, yt) == pytest.approx(float(np.mean(clf.predict(xt) == yt)))


def test_the_estimator_keeps_its_class_labels_and_checks_its_input() -> None:
    x, y, xv, yv, *_ = _digits_features()
    names = np.array(list("abcdefghij"))
    clf = lort.LortClassifier(method="ce", epochs1=3, epochs2=3).fit(x, names[y], xv, names[yv])
    assert set(clf.predict(xv)) <= set(names)
    with pytest.raises(ValueError, match="X has 10 features"):
        clf.predict(xv[:, :10])
    with pytest.raises(ValueError, match="together"):
        lort.LortClassifier().fit(x, y, xv)
    with pytest.raises(NotFittedError):
        lort.LortClassifier().predict(xv)


def test_import_lort_stays_light() -> None:
    """`import lort` loads neither torch nor the core; the analysis half needs no torch."""
    code = (
        "import sys, lort; a = ('torch' in sys.modules, 'lort._core' in sys.modules); "
        "lort.analyze; lort.open_run; lort.Table; print(*a, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
