"""Stage 2's many-head trainings go through the grid: the delta choice of `lort fit` and
`lort compare`, and every `lort sweep`, train their heads together (lort.stage2.grid)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lort.stage2.problem
from cli_helpers import ok

SMALL = ("--epochs1", "2", "--epochs2", "2")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def grids(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of heads of every grid training, in order."""
    sizes: list[int] = []
    real = lort.stage2.problem.train_head_grid

    def counting(*args: Any, **kwargs: Any) -> Any:
        sizes.append(len(args[6]))
        return real(*args, **kwargs)

    monkeypatch.setattr(lort.stage2.problem, "train_head_grid", counting)
    return sizes


def test_fit_and_compare_choose_delta_in_one_grid(grids: list[int], tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok("fit", "--out", run, *SMALL, "--stage2-stop", "last")  # --smooth auto over 10 deltas
    assert grids == [10]
    ok("compare", run, "--protocol", "shared", "--methods", "lort,ce", "--seeds", "2")
    assert grids == [10, 10, 10]  # one selection grid per seed; ce trains alone


def test_fit_stopped_on_validation_scores_every_epoch_through_the_grid(
    grids: list[int], tmp_path: Path
) -> None:
    ok("fit", "--out", tmp_path / "run", *SMALL)
    # the delta grid, then the chosen delta alone and the two baselines, each scored per epoch
    assert grids == [10, 1, 1, 1]


def test_sweeps_train_their_points_together(grids: list[int], tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok("fit", "--out", run, *SMALL, "--smooth", "0.5", "--stage2-stop", "last")
    assert grids == []
    ok("sweep", run, "--smooth", "0,0.5,0.9")
    ok("sweep", run, "--lr", "0.01,0.05", "--wd", "0,0.001")
    assert grids == [3, 4]
    ok("sweep", run, "--smooth", "0,0.5,0.9,0.95")  # three stored, one new
    assert grids == [3, 4, 1]


def test_choices_on_validation_break_ties_by_nll_then_order() -> None:
    from lort.stage2.select import ValScore, best_on_validation

    scores = [ValScore(0.8, 0.5), ValScore(0.8, 0.3), ValScore(0.7, 0.1), ValScore(0.8, 0.3)]
    assert best_on_validation(scores) == 1
    assert best_on_validation([ValScore(None, None), ValScore(0.1, None)]) == 1
    assert best_on_validation([ValScore(0.5, 2.0), ValScore(0.5, 1.0)]) == 1


def test_fit_says_when_the_chosen_delta_makes_lort_plain_ce(tmp_path: Path) -> None:
    import json

    run = tmp_path / "run"
    result = ok("fit", "--out", run, *SMALL)
    report = json.loads((run / "report.json").read_text())
    sel = report["smooth"]
    accs, nlls = sel["val_balanced_accuracy"], sel["val_nll"]
    best = max(accs)
    tied = [i for i, a in enumerate(accs) if a == best]
    assert sel["delta"] == sel["grid"][min(tied, key=lambda i: nlls[i])]
    plain = "plain cross-entropy" in " ".join(result.stderr.split())
    assert plain == (sel["delta"] == 0.0)
    assert plain == any("plain cross-entropy" in n for n in report["notes"])
