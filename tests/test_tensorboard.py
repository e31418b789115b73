"""`lort fit --log tensorboard`: history.csv's rows as TensorBoard scalars in RUN/tensorboard/."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from cli_helpers import flat, ok, one_line_error, run_cli

SMALL = ("--epochs1", "3", "--epochs2", "4", "--smooth", "0.5")


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_the_history_as_tensorboard_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    ok("fit", "--out", run, "--log", "tensorboard", *SMALL)
    events = list((run / "tensorboard").iterdir())
    assert len(events) == 1 and events[0].name.endswith(".lort")
    with (run / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    got = scalars(run / "tensorboard")
    stage1 = [r for r in history if r["stage"] == "stage1"]
    assert [s for s, _ in got["stage1/train_loss"]] == [int(r["epoch"]) for r in stage1]
    assert [v for _, v in got["stage1/train_loss"]] == pytest.approx(
        [float(r["train_loss"]) for r in stage1], rel=1e-6
    )
    stage2 = [r for r in history if r["stage"] == "stage2"]
    assert [v for _, v in got["stage2/val_accuracy"]] == pytest.approx(
        [float(r["val_accuracy"]) for r in stage2], rel=1e-6
    )
    # A resumed fit replaces lort's event file and leaves the user's files alone.
    (run / "tensorboard" / "mine.txt").write_text("keep me")
    ok("fit", "--resume", "--out", run, "--log", "tensorboard", "--method", "ce")
    names = sorted(p.name for p in (run / "tensorboard").iterdir())
    assert len(names) == 2 and "mine.txt" in names and names != sorted([events[0].name, "mine.txt"])


def test_without_tensorboard_the_option_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    result = run_cli("fit", "--out", tmp_path / "run", "--log", "tensorboard", *SMALL)
    one_line_error(result, "--log tensorboard", "pip install 'lort[tensorboard]'")
    assert not (tmp_path / "run").exists()


def test_keep_rewrites_the_scalars_with_the_kept_heads_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    ok("fit", "--out", run, "--log", "tensorboard", *SMALL)
    ok("compare", run, "--methods", "lort,ce")
    result = ok("keep", run, "--method", "ce", "--methods", "lort,ce")
    assert "TensorBoard:" in result.stdout + result.stderr
    events = list((run / "tensorboard").iterdir())
    assert len(events) == 1 and events[0].name.endswith(".lort")
    with (run / "history.csv").open() as f:
        stage2 = [r for r in csv.DictReader(f) if r["stage"] == "stage2"]
    got = scalars(run / "tensorboard")["stage2/val_accuracy"]
    assert [s for s, _ in got] == [int(r["epoch"]) for r in stage2]
    assert [v for _, v in got] == pytest.approx(
        [float(r["val_accuracy"]) for r in stage2], rel=1e-6
    )
    # Where tensorboard is not installed the run still opens and keeps; the note says the
    # scalars were left as they were.
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    before = events[0].read_bytes()
    result = ok("keep", run, "--method", "lort", "--methods", "lort,ce")
    assert "still holds the fit's stage 2" in flat(result.stdout + result.stderr)
    assert events[0].read_bytes() == before
