"""Paired differences with intervals: the numbers, and `lort compare` over several backbones."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from cli_helpers import flat, ok, run_cli
from lort.experiments.intervals import paired, t_interval

SMALL = ("--epochs1", "2", "--epochs2", "2", "--smooth", "0.5")
METHODS = "lort,ce,logit-adjust"
OWN = "compare-lort_ce_logit-adjust.json"  # a run's own table of these three methods


pytestmark = pytest.mark.usefixtures("one_thread")


def test_t_interval_matches_the_textbook() -> None:
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv is not None and iv.n == 3 and iv.mean == 2.0
    half = 4.3026527 / math.sqrt(3)  # t(0.975, 2), to 8 digits, * sd 1 / sqrt(3)
    assert iv.low == pytest.approx(2.0 - half, rel=1e-7)
    assert iv.high == pytest.approx(2.0 + half, rel=1e-7)
    assert not iv.significant  # [-0.48, 4.48] holds 0
    assert t_interval([1.0, 1.1, 0.9]).significant  # type: ignore[union-attr]
    assert t_interval([]) is None
    for too_few in ([0.3], [0.3, 0.5], [0.2, 0.2, 0.2]):  # no interval, nothing significant
        iv = t_interval(too_few)
        assert iv is not None and iv.low is iv.high is None and not iv.significant


def test_paired_takes_the_shared_units_in_order() -> None:
    assert paired({"a": 3.0, "b": 1.0, "c": 2.0}, {"c": 1.0, "a": 1.0}) == [2.0, 1.0]


@pytest.fixture(scope="module")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("backbones")
    runs = [root / f"seed{s}" for s in (0, 1, 2)]
    for s, run in enumerate(runs):
        ok("fit", "--out", run, "--seed", str(s), *SMALL)
    return runs


def test_several_backbones_are_pooled(backbones: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "pooled"
    result = ok("compare", *backbones, "--methods", METHODS, "--seeds", "2", "--out", out)
    data = json.loads((out / "compare.json").read_text())
    assert data["unit"] == "backbones" and data["reference"] == "lort"
    rows = {r["method"]: r for r in data["rows"]}
    # The pooled difference is the mean over backbones of each one's seed-mean difference,
    # as each run's own compare.json has it.
    per_run = []
    for run in backbones:
        own = {r["method"]: r for r in json.loads((run / OWN).read_text())["rows"]}
        per_run.append(own["ce"]["all"]["mean"] - own["lort"]["all"]["mean"])
    vs = rows["ce"]["vs_reference"]
    assert vs["n"] == 3 and vs["mean"] == pytest.approx(statistics.fmean(per_run), abs=1e-12)
    assert vs["low"] <= vs["mean"] <= vs["high"]
    assert rows["lort"]["vs_reference"] is None
    assert rows[data["best"]]["vs_best"] is None
    assert "paired difference" in flat(result.stdout) and "3 backbones" in flat(result.stdout)
    assert (out / "compare.csv").read_text().startswith("method,all_mean")


def test_a_pooled_compare_says_what_each_runs_compare_noted(
    backbones: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "pooled"
    result = ok("compare", *backbones[:2], "--protocol", "paper", "--out", out)
    text = flat(result.stdout)
    assert text.count("note: every run: the paper reports Table 1 on cifar100-lt") == 1
    for run in backbones[:2]:
        for note in json.loads((run / "compare-paper.json").read_text())["notes"]:
            assert flat(note) in text


def test_one_run_with_seeds_gives_differences_over_seeds(backbones: list[Path]) -> None:
    result = ok("compare", backbones[0], "--methods", METHODS, "--seeds", "3")
    data = json.loads((backbones[0] / OWN).read_text())
    diffs = data["differences"]["rows"]
    assert diffs["ce"]["vs_reference"]["n"] == 3 and diffs["lort"]["vs_reference"] is None
    assert "say nothing about another backbone" in flat(result.stdout)


def test_pooling_refuses_what_does_not_belong(
    backbones: list[Path], small_cifar_folder: Path, tmp_path: Path
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = run_cli("compare", *backbones[:2], "--methods", "ce", "--out", busy)
    assert result.exit_code == 1 and "other files" in result.stderr
    assert (busy / "notes.txt").read_text() == "mine" and len(list(busy.iterdir())) == 1
    images = tmp_path / "images"
    ok(
        "fit", "--out", images, "--dataset", "imagefolder", "--data-root", small_cifar_folder,
        "--arch", "resnet8", "--epochs1", "1", "--epochs2", "1", "--smooth", "0.5",
    )  # fmt: skip
    before = sorted(p.name for p in backbones[0].iterdir())
    result = run_cli("compare", backbones[0], images, "--methods", "ce", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "one dataset" in result.stderr
    # refused before any training: nothing new in either run
    assert sorted(p.name for p in backbones[0].iterdir()) == before
    assert not (images / "compare").exists()
