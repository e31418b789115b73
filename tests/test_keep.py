"""`lort keep`: a comparison's head becomes the run's classifier, exactly as compared, then
predicted and exported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import flat, ok, run_cli
from lort.analysis import analyze
from lort.methods import TABLE1
from lort.run.trained import open_trained
from lort.stage2.problem import load_data
from lort.stage2.select import ValScore, best_on_validation


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keep") / "run"
    ok("fit", "--out", out, "--epochs1", "10", "--epochs2", "6", "--seed", "0")
    ok("compare", out)  # tuned, all twelve methods, one seed
    return out


def _point(run: Path, method: str) -> dict:
    return json.loads((run / f"compare/{method}-seed0-protocol-tuned.json").read_text())["result"]


def test_keep_without_a_method_takes_the_best_on_validation(compared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(compared, run)
    table = json.loads((run / "compare.json").read_text())
    names = list(table["points"])
    scores = [
        ValScore(_point(run, n)["val_balanced_accuracy"], _point(run, n)["val_nll"]) for n in names
    ]
    best = names[best_on_validation(scores)]
    result = ok("keep", run)
    assert f"kept {best} " in flat(result.output)
    report = json.loads((run / "report.json").read_text())
    assert report["method"]["name"] == best and report["kept"]["protocol"] == "tuned"
    assert report["kept"]["from"] == f"compare/{best}-seed0-protocol-tuned.json"
    assert report["calibration"]["temperature"] > 0
    pred = tmp_path / "p.json"
    images = tmp_path / "x.npy"
    np.save(images, load_data(open_trained(run).cfg).sources["test"][:5])
    ok("predict", run, images, "--format", "json", "--out", pred)
    assert json.loads(pred.read_text())["method"] == best


def _load_pt2(path: Path) -> torch.nn.Module:
    return torch.export.load(path).module()


def test_every_method_kept_gives_the_compare_points_numbers_and_exports_them(
    compared: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(compared, run)
    test_set = load_data(open_trained(run).cfg).dataset("test")  # prepared as the run read it
    x = torch.cat([b for b, _ in torch.utils.data.DataLoader(test_set, 256)])
    labels = np.load(run / "labels.npy")
    for method in TABLE1:
        ok("keep", run, "--method", method)
        point = _point(run, method)
        logits = np.load(run / "logits.npy")
        a = analyze(logits, labels, train_counts=np.load(run / "train_counts.npy"))
        # The compare point's own test numbers, from the same head through the same function.
        assert a.accuracy == point["test"]["all"], method
        assert a.balanced_accuracy == point["test"]["balanced_accuracy"], method
        np.testing.assert_array_equal(a.per_class["magnitude"], point["per_class"]["magnitude"])
        report = json.loads((run / "report.json").read_text())
        assert report["results"]["overall"]["accuracy"] == point["test"]["all"]
        assert report["kept"]["hyper"] == point["chosen"]["hyper"]
        want = logits / report["calibration"]["temperature"]
        for fmt, load in (("torchscript", torch.jit.load), ("pt2", _load_pt2)):
            module = tmp_path / f"{method}.{fmt}"
            ok("export", run, "--format", fmt, "--out", module)
            with torch.no_grad():
                got = load(module)(x).numpy()
            assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), (method, fmt)


def test_keep_refuses_what_it_cannot_keep_and_changes_nothing(
    compared: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(compared, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for args, expected in (
        (("--protocol", "authors"), "has no authors comparison"),
        (("--method", "no-such"), "unknown re-training method"),
        (("--seed", "7"), "the comparison ran seeds [0]"),
    ):
        result = run_cli("keep", run, *args)
        assert result.exit_code != 0 and expected in flat(result.output), result.output
    result = run_cli("keep", run, "--protocol", "test-selected")
    assert result.exit_code != 0
    (run / "compare/lws-seed0-protocol-tuned.head.pt").unlink()
    result = run_cli("keep", run, "--method", "lws")
    assert result.exit_code != 0 and "is missing" in flat(result.output)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    del before[run / "compare/lws-seed0-protocol-tuned.head.pt"]
    assert after == before
    bare = tmp_path / "bare"
    ok("fit", "--out", bare, "--epochs1", "2", "--epochs2", "2")
    result = run_cli("keep", bare)
    assert result.exit_code != 0 and "run `lort compare" in flat(result.output)


def test_compare_keep_keeps_the_best_of_the_methods_it_compared(
    compared: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(compared, run)
    result = ok("compare", run, "--methods", "lort,ce", "--keep")
    assert "0 re-trained, 2 reused" in flat(result.output)  # the twelve-method points
    scores = [ValScore(_point(run, n)["val_balanced_accuracy"], _point(run, n)["val_nll"])
              for n in ("lort", "ce")]  # fmt: skip
    best = ("lort", "ce")[best_on_validation(scores)]
    report = json.loads((run / "report.json").read_text())
    assert report["method"]["name"] == best
    ok("keep", run, "--methods", "lort,ce", "--method", "ce")
    assert json.loads((run / "report.json").read_text())["method"]["name"] == "ce"
    bad = run_cli("compare", run, "--protocol", "shared", "--keep")
    assert bad.exit_code != 0 and "--keep keeps from the tuned or the authors" in flat(bad.output)


def test_compare_points_report_their_calibration_and_keep_agrees(
    compared: Path, tmp_path: Path
) -> None:
    import csv

    with open(compared / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(TABLE1)
    for r in rows:
        assert float(r["temperature"]) > 0, r["method"]
        assert float(r["test_ece_calibrated"]) >= 0 and float(r["test_nll"]) > 0
    run = tmp_path / "run"
    shutil.copytree(compared, run)
    ok("keep", run, "--method", "lort")
    kept = json.loads((run / "report.json").read_text())["calibration"]
    assert kept == _point(run, "lort")["calibration"]


def test_fit_method_auto_keeps_the_tuned_comparisons_best(tmp_path: Path) -> None:
    """`lort fit --method auto`: LORT, then the tuned comparison of the twelve methods, the one
    best on validation kept: what `lort fit` + `lort compare --keep` give."""
    import lort

    auto, by_hand = tmp_path / "auto", tmp_path / "by-hand"
    small = ("--epochs1", "5", "--epochs2", "3", "--seed", "0")
    result = ok("fit", "--out", auto, "--method", "auto", *small)
    assert "kept " in flat(result.output)
    ok("fit", "--out", by_hand, *small)
    ok("compare", by_hand, "--keep")
    report = json.loads((auto / "report.json").read_text())
    assert report["kept"]["why"].startswith("the best mean class-mean accuracy")
    assert report["method"] == json.loads((by_hand / "report.json").read_text())["method"]
    np.testing.assert_array_equal(np.load(auto / "logits.npy"), np.load(by_hand / "logits.npy"))
    run = lort.fit(tmp_path / "api", method="auto", epochs1=5, epochs2=3, seed=0)
    assert run.method == report["method"]["name"] and "kept" in run.report


def test_the_kept_heads_history_replaces_the_fits_stage2_rows(
    compared: Path, tmp_path: Path
) -> None:
    import csv

    run = tmp_path / "run"
    shutil.copytree(compared, run)

    def history() -> list[dict[str, str]]:
        with (run / "history.csv").open() as f:
            return list(csv.DictReader(f))

    before = history()
    ok("keep", run, "--method", "cb-loss")
    after = history()
    assert [r for r in after if r["stage"] == "stage1"] == [
        r for r in before if r["stage"] == "stage1"
    ]
    curve = _point(run, "cb-loss")["curve"]
    kept = [r for r in after if r["stage"] == "stage2"]
    assert [int(r["epoch"]) for r in kept] == [e["epoch"] for e in curve]
    assert [float(r["val_accuracy"]) for r in kept] == pytest.approx(
        [e["val_accuracy"] for e in curve], abs=1e-12
    )
    ok("keep", run, "--method", "tau-norm")  # post hoc: no stage-2 epochs
    assert [r for r in history() if r["stage"] == "stage2"] == []
