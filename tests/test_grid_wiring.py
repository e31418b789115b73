"""Stage 2's many-head trainings go through the grid: the delta choice of `lort fit` and
`lort compare`, and every `lort sweep`, train their heads together (lort.head_grid)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lort.stage2
from cli_helpers import ok

SMALL = ("--epochs1", "2", "--epochs2", "2")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def grids(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of heads of every grid training, in order."""
    sizes: list[int] = []
    real = lort.stage2.train_head_grid

    def counting(*args: Any, **kwargs: Any) -> Any:
        sizes.append(len(args[6]))
        return real(*args, **kwargs)

    monkeypatch.setattr(lort.stage2, "train_head_grid", counting)
    return sizes


def test_fit_and_compare_choose_delta_in_one_grid(grids: list[int], tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok("fit", "--out", run, *SMALL)  # --smooth auto over the default grid of 10 deltas
    assert grids == [10]
    ok("compare", run, "--methods", "lort,ce", "--seeds", "2")
    assert grids == [10, 10, 10]  # one selection grid per seed; ce trains alone


def test_sweeps_train_their_points_together(grids: list[int], tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok("fit", "--out", run, *SMALL, "--smooth", "0.5")
    assert grids == []
    ok("sweep", run, "--smooth", "0,0.5,0.9")
    ok("sweep", run, "--lr", "0.01,0.05", "--wd", "0,0.001")
    assert grids == [3, 4]
    ok("sweep", run, "--smooth", "0,0.5,0.9,0.95")  # three stored, one new
    assert grids == [3, 4, 1]
