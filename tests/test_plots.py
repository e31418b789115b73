"""The paper's figures (lort.plots) and ``lort analyze --plot``: valid PNGs, class
groups, row subsampling, fallbacks, and clean CLI errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.image import imread

from cli_helpers import PNG, run_cli
from lort import plots
from lort.errors import InputError, LabelError


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert not list(path.parent.glob(f".{path.name}.*")), "temp file left behind"


def synthetic(rows: int = 600, k: int = 10, seed: int = 0):
    """Logits with a margin on the true class; counts from 500 down to 5."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=rows)
    logits = rng.normal(size=(rows, k)).astype(np.float32)
    logits[np.arange(rows), labels] += 3.0
    counts = np.round(500 * 100 ** (-np.arange(k) / max(k - 1, 1))).astype(np.int64)
    return logits, labels, counts


# ----------------------------------------------------------------------------------
# Class groups


def test_groups_ten_classes_are_single():
    groups = plots.class_groups_by_frequency(np.arange(10))
    assert [g.tolist() for g in groups] == [[i] for i in range(9, -1, -1)]


def test_groups_hundred_classes_in_tens():
    counts = np.arange(100)[::-1].copy()
    groups = plots.class_groups_by_frequency(counts)
    assert [g.size for g in groups] == [10] * 10
    assert np.concatenate(groups).tolist() == list(range(100))


def test_groups_small_k_keep_about_ten_points():
    assert [g.size for g in plots.class_groups_by_frequency(np.ones(20, int))] == [2] * 10
    assert [g.size for g in plots.class_groups_by_frequency(np.ones(5, int))] == [1] * 5
    groups = plots.class_groups_by_frequency(np.ones(1005, int))
    assert [g.size for g in groups] == [10] * 100 + [5]  # last group shorter


def test_groups_ties_are_stable_and_uint64_ok():
    counts = np.array([5, 9, 5, 9, 5, 1, 9, 5, 0, 5], dtype=np.uint64)
    order = np.concatenate(plots.class_groups_by_frequency(counts)).tolist()
    assert order == [1, 3, 6, 0, 2, 4, 7, 9, 5, 8]


# ----------------------------------------------------------------------------------
# Fig. 2


def test_histograms_png(tmp_path):
    logits, labels, counts = synthetic()
    out = plots.plot_logit_histograms(
        logits, labels, counts, tmp_path / "a" / "h.png", "synthetic run"
    )
    assert out == tmp_path / "a" / "h.png"
    assert_png(out)


def test_histograms_subsample_memmap(tmp_path, monkeypatch):
    logits, labels, counts = synthetic(rows=5000)
    np.save(tmp_path / "z.npy", logits)
    z = np.load(tmp_path / "z.npy", mmap_mode="r")
    seen: list[int] = []
    real = plots.subsample_rows

    def spy(a, b, max_rows):
        sub = real(a, b, max_rows)
        seen.append(sub[0].shape[0])
        return sub

    monkeypatch.setattr(plots, "subsample_rows", spy)
    plots.plot_logit_histograms(z, labels, counts, tmp_path / "h.png", "mm", max_rows=700)
    assert seen and seen[0] <= 700 and seen[0] == len(range(0, 5000, 8))
    assert_png(tmp_path / "h.png")


def test_subsample_rows_bounds():
    z = np.zeros((1001, 3))
    y = np.arange(1001)
    for m in (1, 10, 333, 1000, 1001, 5000):
        zs, ys = plots.subsample_rows(z, y, m)
        assert zs.shape[0] == ys.shape[0] <= m
        assert ys[0] == 0
    with pytest.raises(LabelError):
        plots.subsample_rows(z, y[:-1], 10)


def test_histogram_groups_fallback():
    # No class has fewer than 20 images: few falls back to the 3 least frequent.
    groups = plots.histogram_groups(np.array([500, 300, 200, 50, 40, 30]))
    (many_title, many), (few_title, few) = groups
    assert many.tolist() == [0, 1, 2] and "many classes (3" in many_title
    assert few.tolist() == [3, 4, 5] and "no few classes" in few_title and "3 least" in few_title
    # No class above 100: many falls back to the 3 most frequent.
    (many_title, many), _ = plots.histogram_groups(np.array([10, 50, 60, 5]))
    assert many.tolist() == [0, 1, 2] and "no many classes" in many_title


def test_histograms_empty_few_group_png(tmp_path):
    logits, labels, _ = synthetic(k=6)
    counts = np.array([500, 300, 200, 50, 40, 30])
    assert_png(plots.plot_logit_histograms(logits, labels, counts, tmp_path / "h.png", "t"))


def test_histograms_reject_bad_shapes(tmp_path):
    logits, labels, counts = synthetic()
    with pytest.raises(InputError):
        plots.plot_logit_histograms(logits, labels, counts[:-1], tmp_path / "h.png", "t")
    with pytest.raises(LabelError):
        plots.plot_logit_histograms(logits, labels + 10, counts, tmp_path / "h.png", "t")
    assert not (tmp_path / "h.png").exists()


# ----------------------------------------------------------------------------------
# Figs. 3-5


def test_group_metrics_png_nan_safe(tmp_path):
    k = 30
    counts = np.arange(k, 0, -1)
    mag = np.linspace(3, 1, k)
    rstd = np.linspace(0.2, 0.5, k)
    mag_nan = mag.copy()
    mag_nan[:3] = np.nan  # a whole group with no test rows: a gap, not an error
    rstd_inf = rstd.copy()
    rstd_inf[5] = np.inf
    out = plots.plot_group_metrics(
        {"ce": (mag, rstd), "lort": (mag_nan, rstd_inf)}, counts, tmp_path / "g.png", "run"
    )
    assert_png(out)
    with pytest.raises(InputError):
        plots.plot_group_metrics({"ce": (mag[:-1], rstd)}, counts, tmp_path / "x.png", "r")


def test_group_metrics_name_every_method_in_one_legend_outside_the_panels():
    from lort.methods import TABLE1

    k = 10
    counts = np.round(500 * 100 ** (-np.arange(k) / (k - 1))).astype(np.int64)
    per_method = {
        m: (np.linspace(3, 1, k) + i, np.linspace(0.2, 0.5, k) + i / 10)
        for i, m in enumerate(TABLE1)
    }
    fig = plots.group_metrics_figure(per_method, counts, "run")
    fig.canvas.draw()
    assert [ax.get_legend() for ax in fig.axes] == [None, None]
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(TABLE1)
    box = legend.get_window_extent()
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent()), ax.get_title()


def test_epoch_curves_draw_post_hoc_methods_as_their_values(tmp_path):
    from lort.methods import TABLE1

    post_hoc = {"tau-norm": (0.30, 0.25), "logit-adjust": (0.62, None)}
    epochs = [{"epoch": e, "val_accuracy": 0.1 * e, "test_accuracy": 0.09 * e} for e in (1, 2, 3)]
    curves = {m: [*epochs, {"kept": 2}] for m in TABLE1 if m not in post_hoc}
    for m, (val, test) in post_hoc.items():
        curves[m] = [{"val_accuracy": val, "test_accuracy": test}]
    fig = plots.epoch_curves_figure(curves, "run")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert len(panels) == len(TABLE1)
    for m in TABLE1:
        assert m in panels or f"{m} (post-hoc: no epochs)" in panels, m
    tau = panels["tau-norm (post-hoc: no epochs)"]
    lines = {line.get_label(): set(line.get_ydata()) for line in tau.get_lines()}
    assert lines == {"validation": {30.0}, "test": {25.0}}
    assert "validation 30.0%" in tau.texts[0].get_text()
    adjust = panels["logit-adjust (post-hoc: no epochs)"]  # no test value: the one line
    assert {line.get_label() for line in adjust.get_lines()} == {"validation"}
    assert_png(plots.plot_epoch_curves(curves, tmp_path / "e.png", "run"))


def test_group_means_skip_non_finite():
    v = np.array([1.0, np.nan, 3.0, np.inf, np.nan])
    means = plots._group_means(v, [np.array([0, 1, 2]), np.array([3, 4])])
    assert means[0] == 2.0 and np.isnan(means[1])


def test_smooth_sweep_png(tmp_path):
    deltas = [0.0, 0.2, 0.5, 0.8, 0.95]
    out = plots.plot_smooth_sweep(
        deltas,
        [0.40, 0.42, 0.45, 0.44, 0.30],
        tmp_path / "s.png",
        "cifar100-lt",
        val_acc=[0.41, 0.43, 0.47, 0.45, 0.31],
        chosen=0.5,
    )
    assert_png(out)
    assert_png(plots.plot_smooth_sweep(deltas[:1], [0.5], tmp_path / "s1.png", "one"))
    with pytest.raises(InputError):
        plots.plot_smooth_sweep(deltas, [0.4], tmp_path / "bad.png", "t")


def test_lr_wd_heatmap_png(tmp_path):
    lrs, wds = [0.01, 0.05, 0.1], [1e-4, 5e-4, 1e-3, 5e-3]
    acc = np.linspace(0.3, 0.5, 12).reshape(3, 4)
    acc[2, 3] = np.nan  # a failed run shows a dash
    out = plots.plot_lr_wd_heatmap(lrs, wds, acc, tmp_path / "hm.png", "run", chosen=(0.05, 5e-4))
    assert_png(out)
    with pytest.raises(InputError, match="not one of"):
        plots.plot_lr_wd_heatmap(lrs, wds, acc, tmp_path / "x.png", "run", chosen=(0.2, 5e-4))
    with pytest.raises(InputError):
        plots.plot_lr_wd_heatmap(lrs, wds, acc.T, tmp_path / "x.png", "run")


def test_no_pyplot_figures_left(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_fignums()
    plots.plot_smooth_sweep([0.1, 0.2], [0.5, 0.6], tmp_path / "s.png", "t")
    assert plt.get_fignums() == before


def test_missing_matplotlib_is_input_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(InputError, match=r"pip install 'lort\[plot\]'"):
        plots.plot_smooth_sweep([0.1], [0.5], tmp_path / "s.png", "t")


# ----------------------------------------------------------------------------------
# lort analyze --plot


def write_inputs(folder: Path, shards: int = 1) -> list[Path]:
    logits, labels, counts = synthetic(rows=900, k=10)
    np.save(folder / "labels.npy", labels)
    np.save(folder / "counts.npy", counts)
    paths = []
    for i, part in enumerate(np.array_split(logits, shards)):
        paths.append(folder / f"logits{i}.npy")
        np.save(paths[-1], part)
    return paths


@pytest.mark.parametrize("shards", [3])  # one file: test_analyze_plot_example
def test_analyze_plot_writes_both(tmp_path, shards):
    paths = write_inputs(tmp_path, shards)
    out = tmp_path / "figs"
    result = run_cli(
        "analyze",
        *paths,
        "--labels",
        tmp_path / "labels.npy",
        "--train-counts",
        tmp_path / "counts.npy",
        "--plot",
        out,
    )
    assert result.exit_code == 0, result.output
    for name in ("logit_histograms.png", "group_metrics.png"):
        assert_png(out / name)
        assert f"wrote{out / name}" in "".join(result.output.split())  # rich wraps lines


def test_analyze_plot_example(tmp_path):
    result = run_cli("analyze", "--example", "--plot", tmp_path / "ex")
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "ex" / "logit_histograms.png")
    assert_png(tmp_path / "ex" / "group_metrics.png")


def test_analyze_plot_needs_counts(tmp_path):
    paths = write_inputs(tmp_path)
    result = run_cli("analyze", *paths, "--labels", tmp_path / "labels.npy", "--plot", tmp_path)
    assert result.exit_code == 2
    assert "--plot needs --train-counts or --train-labels" in result.output
    assert not list(tmp_path.glob("*.png"))


def test_analyze_without_plot_does_not_import_matplotlib(tmp_path):
    paths = write_inputs(tmp_path)
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from lort.cli import main\n"
        f"r = CliRunner().invoke(main, ['analyze', {str(paths[0])!r}, "
        f"'--labels', {str(tmp_path / 'labels.npy')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'matplotlib' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
