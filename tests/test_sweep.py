"""``lort sweep``: LORT's delta and a stage-2 lr x weight-decay grid on one run's cache.

``base_run`` is a small digits run with ``--smooth auto`` (so it has a validation split);
``no_val_run`` is one without a validation split (CE, ``--val-fraction 0``). Both are made
once for the module; tests that write into a run copy it first.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli_helpers import PNG, flat, mtimes, ok, run_cli

RUN_FLAGS = ("--epochs1", "3", "--epochs2", "4")
TEST_KEYS = ("all", "many", "medium", "few")


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "run"
    ok("fit", "--out", out, *RUN_FLAGS)
    return out


@pytest.fixture(scope="module")
def no_val_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "noval"
    ok(
        "fit",
        "--out",
        out,
        "--epochs1",
        "1",
        "--epochs2",
        "2",
        "--method",
        "ce",
        "--val-fraction",
        "0",
    )
    return out


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy)
    return copy


# --------------------------------------------------------------------------------------
# delta (Fig. 4)


def test_smooth_sweep_over_the_config_grid_chooses_what_fit_chose(run: Path) -> None:
    """Sweeping the run's own grid is `--smooth auto` spelled out: the same validation
    scores, the same chosen delta, and the chosen point's test numbers are the run's."""
    report = read(run / "report.json")
    grid = yaml.safe_load((run / "config.yaml").read_text())["smooth_grid"]
    result = ok("sweep", run, "--smooth", ",".join(map(str, grid)))
    data = read(run / "sweep-smooth.json")
    assert [p["delta"] for p in data["points"]] == sorted(grid)
    by_delta = {p["delta"]: p for p in data["points"]}
    scores = report["smooth"]["val_balanced_accuracy"]
    assert [by_delta[d]["val_balanced_accuracy"] for d in grid] == scores
    assert data["selection"] == "validation split"
    chosen = data["chosen"]
    assert chosen["delta"] == report["smooth"]["delta"]
    assert chosen["val_balanced_accuracy"] == max(scores)
    want = report["results"]
    assert chosen["test"]["all"] == want["overall"]["accuracy"]
    for g in ("many", "medium", "few"):
        assert chosen["test"][g] == want["groups"][g]["accuracy"]
    # every point's test numbers are kept, marked as illustration
    assert all(set(TEST_KEYS) <= set(p["test"]) for p in data["points"])
    assert "illustration" in data["note"]

    rows = csv_rows(run / "sweep-smooth.csv")
    assert [float(r["delta"]) for r in rows] == sorted(grid)
    assert [r["chosen"] for r in rows].count("1") == 1
    assert float(next(r for r in rows if r["chosen"] == "1")["delta"]) == chosen["delta"]
    assert (run / "figures" / "sweep_smooth.png").read_bytes()[:8] == PNG

    # on screen: validation scores per delta, a test figure for the chosen delta only
    out = flat(result.stdout)
    assert "val balanced acc" in out and "test All" not in out
    assert out.count("test accuracy All") == 1
    assert f"chosen delta {chosen['delta']:g}" in out


def test_smooth_sweep_points_are_reused(run: Path) -> None:
    ok("sweep", run, "--smooth", "0,0.5")
    before = mtimes(run / "sweep")
    result = ok("sweep", run, "--smooth", "0.5,0,0.9")
    after = mtimes(run / "sweep")
    for name in ("smooth-0.0.json", "smooth-0.5.json"):
        assert after[name] == before[name], name
    assert "smooth-0.9.json" in after
    assert "1 re-trained, 2 reused" in flat(result.stderr)
    assert [p["delta"] for p in read(run / "sweep-smooth.json")["points"]] == [0.0, 0.5, 0.9]


# --------------------------------------------------------------------------------------
# lr x weight decay (Fig. 5)


def test_lr_wd_grid(run: Path) -> None:
    report = read(run / "report.json")
    stage2 = report["config"]["stage2"]
    lr, wd = stage2["lr"], stage2["weight_decay"]
    result = ok("sweep", run, "--lr", f"0.01,{lr}", "--wd", f"{wd},0.001")
    data = read(run / "sweep-lr-wd.json")
    assert data["method"] == "lort" and data["lrs"] == [0.01, lr]
    assert data["weight_decays"] == [wd, 0.001]
    assert data["delta"] == report["smooth"]["delta"]
    assert len(data["points"]) == 4
    assert [(p["lr"], p["weight_decay"]) for p in data["points"]] == [
        (0.01, wd),
        (0.01, 0.001),
        (lr, wd),
        (lr, 0.001),
    ]
    best = max(p["val_balanced_accuracy"] for p in data["points"])
    assert data["chosen"]["val_balanced_accuracy"] == best
    # the run's own lr and wd with the run's delta is the run's own stage 2
    own = next(p for p in data["points"] if (p["lr"], p["weight_decay"]) == (lr, wd))
    assert own["test"]["all"] == report["results"]["overall"]["accuracy"]

    rows = csv_rows(run / "sweep-lr-wd.csv")
    assert len(rows) == 4 and [r["chosen"] for r in rows].count("1") == 1
    assert (run / "figures" / "sweep_lr_wd.png").read_bytes()[:8] == PNG
    out = flat(result.stdout)
    assert "validation balanced accuracy" in out and out.count("test accuracy All") == 1

    before = mtimes(run / "sweep")
    result = ok("sweep", run, "--lr", f"0.01,{lr}", "--wd", f"{wd},0.001")
    assert mtimes(run / "sweep") == before
    assert "0 re-trained, 4 reused" in flat(result.stderr)


def test_lr_only_grid_for_another_method(run: Path) -> None:
    ok("sweep", run, "--lr", "0.02", "--method", "ce")
    data = read(run / "sweep-lr-wd.json")
    wd = read(run / "report.json")["config"]["stage2"]["weight_decay"]
    assert data["method"] == "ce" and data["delta"] is None
    assert [(p["lr"], p["weight_decay"]) for p in data["points"]] == [(0.02, wd)]


# --------------------------------------------------------------------------------------
# A run without a validation split: nothing is chosen.


def test_without_a_validation_split_nothing_is_chosen(no_val_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(no_val_run, run)
    result = ok("sweep", run, "--smooth", "0,0.5")
    data = read(run / "sweep-smooth.json")
    assert data["chosen"] is None and data["selection"] == "none"
    assert all(p["val_balanced_accuracy"] is None for p in data["points"])
    assert "no validation split" in flat(result.stdout)
    assert "no value is selected" in flat(result.stdout)
    assert "test All" in flat(result.stdout)
    assert [r["chosen"] for r in csv_rows(run / "sweep-smooth.csv")] == ["0", "0"]
    assert (run / "figures" / "sweep_smooth.png").read_bytes()[:8] == PNG

    ok("sweep", run, "--lr", "0.01,0.05")
    assert read(run / "sweep-lr-wd.json")["chosen"] is None

    # LORT has no delta to take here: 'auto' with nothing to pick it on
    shared = ("compare", run, "--protocol", "shared")
    for args in (("sweep", run, "--lr", "0.01", "--method", "lort"), shared):
        result = run_cli(*args)
        assert result.exit_code == 1 and "--smooth DELTA" in flat(result.stderr), args
    result = run_cli(*shared, "--methods", "ce", "--select-on", "val")
    assert result.exit_code == 1 and "no validation split" in result.stderr
    # the tuned protocol chooses every setting on validation: it needs the split too
    result = run_cli("compare", run, "--methods", "ce")
    assert result.exit_code == 1 and "no validation split" in result.stderr


# --------------------------------------------------------------------------------------
# Bad input.

BAD = [
    pytest.param((), 2, ["--smooth", "--lr"], id="neither"),
    pytest.param(("--smooth", "0.5", "--lr", "0.1"), 2, ["not both"], id="both"),
    pytest.param(("--smooth", "0.5", "--method", "ce"), 2, ["--method"], id="smooth-method"),
    pytest.param(("--smooth", "0.5,abc"), 1, ["'abc'", "not a number"], id="not-a-number"),
    pytest.param(("--smooth", "0.5,,0.9"), 1, ["empty"], id="empty-entry"),
    pytest.param(("--smooth", "0.5,1"), 1, ["[0, 1)", "1"], id="smooth-one"),
    pytest.param(("--smooth", "-0.1"), 1, ["[0, 1)"], id="smooth-negative"),
    pytest.param(("--lr", "0"), 1, ["--lr", "(0, inf)"], id="lr-zero"),
    pytest.param(("--wd", "-1"), 1, ["--wd", "[0, inf)"], id="wd-negative"),
    pytest.param(("--lr", "nan"), 1, ["--lr"], id="lr-nan"),
    pytest.param(
        ("--lr", "0.1", "--method", "nope"), 1, ["'nope'", "lort", "tau-norm"], id="method"
    ),
]


@pytest.mark.parametrize(("flags", "code", "expected"), BAD)
def test_bad_input_is_one_clean_error(
    flags: tuple[str, ...], code: int, expected: list[str], base_run: Path
) -> None:
    before = mtimes(base_run)
    result = run_cli("sweep", base_run, *flags)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(("Error:", "Usage:")), result.stderr
    for part in expected:
        assert part in result.stderr, part
    assert mtimes(base_run) == before


def test_not_a_finished_run(tmp_path: Path, base_run: Path) -> None:
    result = run_cli("sweep", tmp_path / "missing", "--smooth", "0.5")
    assert result.exit_code == 1 and "lort fit" in result.stderr
    unfinished = tmp_path / "unfinished"
    shutil.copytree(base_run, unfinished)
    (unfinished / "features" / "index.json").unlink()
    result = run_cli("sweep", unfinished, "--lr", "0.1")
    assert result.exit_code == 1
    assert "features/index.json" in result.stderr and "lort fit" in result.stderr
