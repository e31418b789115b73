"""`lort compare --epoch`: the stage-2 epoch each re-training reports: its last (the default),
its best on the validation split, or (labelled, to measure the habit's gap) on the test set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import flat, ok, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")
METHODS = "lort,ce,tau-norm"


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("stopping") / "run"
    ok("fit", "--out", run, "--epochs1", "3", "--epochs2", "6")
    ok("compare", run, "--methods", METHODS)
    return run


def rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["method"]: r for r in json.loads(path.read_text())["rows"]}


def test_validation_stopping_keeps_the_best_validation_epoch(compared: Path) -> None:
    result = ok("compare", compared, "--methods", METHODS, "--epoch", "val")
    data = json.loads((compared / "compare-val.json").read_text())
    assert data["epoch"] == "val" and "validation split" in data["definitions"]["epoch"]
    last, val = rows(compared / "compare.json"), rows(compared / "compare-val.json")
    one_image = 1 / 117  # the digits validation split
    for m in METHODS.split(","):
        assert 1 <= val[m]["epoch"][0] <= 6
        best = val[m]["val_balanced_accuracy"]["mean"]
        assert best >= last[m]["val_balanced_accuracy"]["mean"] - one_image, m
    assert (compared / "compare" / "ce-seed0-val.json").is_file()
    assert last["ce"]["epoch"] == [6]  # the default table is untouched: last epoch
    assert "chosen on the validation split" in flat(result.stdout)


def test_test_selection_is_labelled_everywhere(compared: Path) -> None:
    result = ok("compare", compared, "--methods", METHODS, "--epoch", "test-selected")
    assert "TEST-SELECTED" in flat(result.stdout) and "not which method is better" in flat(
        result.stdout
    )
    data = json.loads((compared / "compare-test-selected.json").read_text())
    assert data["epoch"] == "test-selected"
    assert "not a fair comparison" in data["definitions"]["epoch"]
    last, chosen = rows(compared / "compare.json"), rows(compared / "compare-test-selected.json")
    for m in ("ce", "tau-norm"):  # no delta to choose: only the epoch moves
        assert chosen[m]["all"]["mean"] >= last[m]["all"]["mean"] - 1 / 300, m
    assert json.loads((compared / "compare.json").read_text())["epoch"] == "last"


def test_validation_stopping_needs_a_validation_split(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok("fit", "--out", run, "--epochs1", "2", "--epochs2", "2", "--method", "ce",
       "--val-fraction", "0")  # fmt: skip
    result = run_cli("compare", run, "--methods", "ce", "--epoch", "val")
    assert result.exit_code == 1 and "no validation split" in result.stderr
