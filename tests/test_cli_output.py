"""What the command line says and draws, where issue 29 found it wanting: every `lort fit`
option explained, a dry run that creates nothing, `lort analyze --plot` kept out of run folders,
output not wrapped when it is not a terminal, and figures whose labels, colours and axes say
what they show."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import ok, one_line_error, run_cli
from lort.options import FIT_OPTIONS


def test_fit_help_explains_every_option() -> None:
    assert [o.cli for o in FIT_OPTIONS if not o.help] == []
    text = " ".join(ok("fit", "--help").output.split())
    for flag, words in (
        ("--stage1-loss", "Stage-1 loss"),
        ("--stage2-mode", "features extracted once"),
        ("--seed", "Seed of the split"),
        ("--device", "Where to train"),
    ):
        assert words in text.split(f" {flag} ", 1)[1][:120], flag


def test_dry_run_with_download_creates_no_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "cifar"
    result = ok(
        "fit", "--dataset", "cifar10-lt", "--data-root", data, "--download", "--dry-run",
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert not data.exists()
    assert not (tmp_path / "run").exists()
    assert "nothing fetched" in " ".join(result.output.split())


def _logits(folder: Path, k: int = 5) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(k), 20)
    logits = rng.normal(size=(labels.size, k)).astype(np.float32)
    logits[np.arange(labels.size), labels] += 2.0
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "logits.npy", folder / "labels.npy", folder / "counts.npy"
    for path, array in zip(paths, (logits, labels, np.array([200, 100, 50, 10, 5])), strict=True):
        np.save(path, array)
    return paths


@pytest.mark.parametrize("inside", ["an", "."])
def test_analyze_writes_no_figures_into_a_run_folder(tmp_path: Path, inside: str) -> None:
    pytest.importorskip("matplotlib")
    logits, labels, counts = _logits(tmp_path / "mine")
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text("{}")  # what makes a folder a lort run
    result = run_cli(
        "analyze", logits, "--labels", labels, "--train-counts", counts, "--plot", run / inside
    )
    one_line_error(result, "inside the lort run", "--overwrite")
    assert sorted(p.name for p in run.iterdir()) == ["state.json"]
    outside = tmp_path / "figures"
    ok("analyze", logits, "--labels", labels, "--train-counts", counts, "--plot", outside)
    assert (outside / "group_metrics.png").is_file()


def test_output_that_is_not_a_terminal_is_not_wrapped(tmp_path: Path) -> None:
    folder = tmp_path / ("logits-in-a-folder-whose-name-alone-is-longer-than-a-line-" + "y" * 50)
    logits, labels, counts = _logits(folder)
    result = ok("analyze", logits, "--labels", labels, "--train-counts", counts)
    lines = result.output.splitlines()
    assert any(str(logits) in line for line in lines), result.output  # the title, whole
    overall = next(line for line in lines if "overall" in line)
    assert len(re.findall(r"\d+\.\d+", overall)) >= 3  # the row on one line


# Figures: drawn here, looked at by hand (tests write them under the temp folder).


def test_sweep_figure_says_which_accuracy_it_draws() -> None:
    pytest.importorskip("matplotlib")
    from lort.plots import smooth_sweep_figure

    fig = smooth_sweep_figure([0.0, 0.5, 0.9], [0.7, 0.8, 0.75], "t", [0.6, 0.7, 0.72], 0.9)
    ax = fig.axes[0]
    assert "class-mean" in ax.get_ylabel() and "top-1" in ax.get_ylabel()
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("validation" in n and "class-mean" in n for n in names)
    assert any("test" in n and "top-1" in n for n in names)
    alone = smooth_sweep_figure([0.0, 0.5], [0.7, 0.8], "t")
    assert "class-mean" not in alone.axes[0].get_ylabel()


def _twelve(k: int = 10) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from lort.methods import TABLE1

    rng = np.random.default_rng(1)
    per_method = {
        m: (rng.uniform(0.5, 3.0, k), rng.uniform(0.2, 1.2, k)) for m in TABLE1
    }  # fmt: skip
    per_method["logit-adjust"][1][-1] = -17.0  # r where a class's L is about 0
    return per_method


def test_group_metrics_one_colour_per_method_and_an_axis_for_the_bulk(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_hex

    from lort.plots import group_metrics_figure, plot_group_metrics

    per_method = _twelve()
    counts = np.geomspace(500, 5, 10).astype(np.int64)
    fig = group_metrics_figure(per_method, counts, "twelve methods")
    ax_l, ax_r = fig.axes[:2]
    colours = [to_hex(line.get_color()) for line in ax_r.get_lines()]
    assert len(colours) == 12 and len(set(colours)) == 12, colours
    low, high = ax_r.get_ylim()
    assert low > -2.0 and high < 3.0, (low, high)  # not stretched to -17
    notes = " ".join(t.get_text() for t in ax_r.texts)
    assert "logit-adjust -17" in notes
    assert len(ax_l.texts) == 0 and ax_l.get_ylim()[0] < 0.6  # nothing off the L panel
    plot_group_metrics(per_method, counts, tmp_path / "group_metrics.png", "twelve methods")


def test_many_far_points_are_data_and_stay_on_the_axis() -> None:
    from lort.plots import robust_range

    bulk = np.linspace(0.5, 2.0, 100)
    assert robust_range(np.append(bulk, -17.0)) == (0.5, 2.0)
    assert robust_range(np.append(bulk, [60.0, 80.0, 100.0, 120.0])) is None
    assert robust_range(np.append(bulk * 7, 19.6)) is None  # the most frequent class's L
    assert robust_range(bulk) is None


def test_resume_says_what_it_resumed_from(tmp_path: Path) -> None:
    run = tmp_path / "run"
    small = ("--epochs1", "2", "--epochs2", "2", "--smooth", "0.5")
    ok("fit", "--out", run, *small, "--stop-after", "stage1")
    text = " ".join(ok("fit", "--resume", "--out", run).output.split())
    assert f"resumed {run}: stage 1 is finished (2 of 2 epochs, stage1.ckpt)" in text, text


def test_resume_mid_stage_1_names_the_epoch(tmp_path: Path) -> None:
    from lort.run.fit import _resumed
    from lort.run.folder import RunFolder

    class Unfinished(RunFolder):
        def done(self, phase: str) -> bool:
            return False

    line = _resumed(Unfinished(tmp_path), 37, 200)
    assert line == f"resumed {tmp_path}: stage 1 continues after epoch 37 of 200 (stage1.ckpt)"
