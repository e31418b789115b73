"""`lort keep`: a comparison's head becomes the run's classifier, exactly as compared, then
predicted and exported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import flat, ok, one_line_error, run_cli
from lort.analysis import analyze
from lort.experiments.keep import SURE, choose, paired_bootstrap
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
    winner = names[best_on_validation(scores)]
    result = ok("keep", run)
    report = json.loads((run / "report.json").read_text())
    best = _kept_by_the_rule(report, winner)
    assert f"kept {best} " in flat(result.output)
    assert report["kept"]["validation"]["line"] in flat(result.output)
    assert report["method"]["name"] == best and report["kept"]["protocol"] == "tuned"
    assert report["kept"]["from"] == f"compare/{best}-seed0-protocol-tuned.json"
    assert report["calibration"]["temperature"] > 0
    pred = tmp_path / "p.json"
    images = tmp_path / "x.npy"
    np.save(images, load_data(open_trained(run).cfg).sources["test"][:5])
    ok("predict", run, images, "--format", "json", "--out", pred)
    assert json.loads(pred.read_text())["method"] == best


def _kept_by_the_rule(report: dict, winner: str) -> str:
    """What the rule keeps, from what report.json says of the validation bootstrap: the
    winner, unless it is not better than the run's own method in SURE of the resamples."""
    v = report["kept"]["validation"]
    assert v["winner"] == winner and v["own"] == "lort"
    for paired in v["against"].values():
        assert paired["low"] <= paired["difference"] <= paired["high"]
        assert 0 <= paired["p_better"] <= 1
    own = v["against"].get("own")
    assert v["told_apart"] == (own is None or own["p_better"] >= SURE)
    return winner if v["told_apart"] else "lort"


def test_the_paired_bootstrap() -> None:
    y = np.repeat(np.arange(3), [40, 8, 2])
    a = np.ones((1, len(y)), dtype=bool)
    same = paired_bootstrap(a, a, y)
    assert (same.difference, same.low, same.high, same.p_better) == (0, 0, 0, 0)
    b = a.copy()
    b[0, y == 2] = False  # b misses the two images of class 2: a third of its class-mean
    better = paired_bootstrap(a, b, y)
    assert better.difference == pytest.approx(1 / 3) and better.p_better == 1
    assert better.low == better.high == pytest.approx(1 / 3)  # a class is resampled within
    c = a.copy()
    c[0, np.flatnonzero(y == 0)[:3]] = False  # 3 of 40 head images: a noisy 2.5 points
    close = paired_bootstrap(a, c, y)
    assert close.difference == pytest.approx(3 / 40 / 3)
    assert close.low < close.difference < close.high and 0.9 < close.p_better <= 1
    d = c.copy()
    d[0, np.flatnonzero(y == 0)[3:6]] = False
    e = a.copy()
    e[0, np.flatnonzero(y == 0)[6:9]] = False
    # Two seeds (rows), each 3 head images ahead (c on 3..5; e on 0..5, behind on 6..8): the
    # mean over them, the same resample for both.
    two = paired_bootstrap(np.vstack([c, e]), np.vstack([d, d]), y)
    assert two.difference == pytest.approx(3 / 40 / 3)
    assert two.p_better > paired_bootstrap(e, d, y).p_better
    assert paired_bootstrap(c, d, y) == paired_bootstrap(c, d, y)  # seeded


def test_the_rule_keeps_the_runs_own_method_unless_validation_tells_them_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The validation winner is kept only when it beats the run's own method in at least SURE
    of the resamples; the runner-up is reported beside it."""
    from types import SimpleNamespace

    import lort.experiments.keep as keep_module

    y = np.repeat(np.arange(2), 20)
    right = np.ones((1, 40), dtype=bool)
    correct = {"lort": right.copy(), "ce": right.copy(), "focal": right.copy()}
    correct["lort"][0, :1] = False  # one image of 20 behind ce: better in 64% of resamples
    correct["focal"][0, :20] = False  # all of class 0 wrong
    monkeypatch.setattr(keep_module, "_val_correct", lambda run, n, seeds, protocol: correct[n])
    run = SimpleNamespace(cfg=SimpleNamespace(method="lort"),
                          problem=SimpleNamespace(data=SimpleNamespace(val_labels=y)))  # fmt: skip

    def results(acc: dict[str, float]) -> dict[str, list[dict[str, float]]]:
        return {n: [{"val_balanced_accuracy": a, "val_nll": 0.5}] for n, a in acc.items()}

    close = results({"lort": 0.95, "ce": 1.0, "focal": 0.5})
    kept, why, v = choose(run, close, [0], "tuned")  # type: ignore[arg-type]
    assert kept == "lort" and not v["told_apart"] and v["winner"] == "ce"
    assert "cannot tell ce from the run's own lort" in v["line"] and "own method" in why
    assert v["against"]["own"]["p_better"] < SURE and "runner_up" not in v["against"]
    correct["lort"][0, :10] = False  # now 25 points below, on 10 images of 20
    kept, why, v = choose(run, close, [0], "tuned")  # type: ignore[arg-type]
    assert kept == "ce" and v["told_apart"] and v["against"]["own"]["p_better"] >= SURE
    assert why.startswith("the best mean class-mean accuracy")
    # The run's own method wins: kept, and reported against the runner-up.
    kept, _, v = choose(run, results({"lort": 1.0, "ce": 0.7, "focal": 0.5}), [0], "tuned")  # type: ignore[arg-type]
    assert kept == "lort" and v["told_apart"] and v["against"]["runner_up"]["method"] == "ce"
    assert v["against"]["runner_up"]["difference"] == pytest.approx(-0.25)


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
    assert report["method"]["name"] == _kept_by_the_rule(report, best)
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
    kept = _kept_by_the_rule(report, report["kept"]["validation"]["winner"])
    assert report["method"]["name"] == kept and report["kept"]["validation"]["line"] in flat(
        result.output
    )
    assert report["method"] == json.loads((by_hand / "report.json").read_text())["method"]
    np.testing.assert_array_equal(np.load(auto / "logits.npy"), np.load(by_hand / "logits.npy"))
    run = lort.fit(tmp_path / "api", method="auto", epochs1=5, epochs2=3, seed=0)
    assert run.method == report["method"]["name"] and "kept" in run.report


def test_fit_method_auto_without_validation_refuses_before_training(tmp_path: Path) -> None:
    """`--method auto` chooses on validation: a run without a validation split is refused
    once its data is read, before either stage trains, naming the flags."""
    out = tmp_path / "auto"
    result = run_cli(
        "fit", "--out", out, "--method", "auto", "--val-fraction", "0", "--smooth", "0.9"
    )
    one_line_error(result, "--method auto chooses a method on the validation split")
    assert "--val-fraction" in result.output
    assert not (out / "stage1.ckpt").exists() and not (out / "features").exists()


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
