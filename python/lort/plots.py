"""The paper's figures as PNG files (arXiv 2403.00250, Figs. 2-5), drawn headless.

matplotlib is optional (``pip install 'lort[plot]'``) and imported only when a
figure is drawn. Figures are built with the object-oriented API
(:class:`matplotlib.figure.Figure` on the Agg canvas), never through
``pyplot``: nothing registers a global figure, so nothing leaks, and the
caller's backend is left alone. Every file is written to a temporary name in
the destination folder and renamed, so a reader never sees half a PNG.

Class groups follow the core's shot rule (:data:`lort.analysis.GROUP_RULE`).
"""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lort.analysis import (
    FEW_BELOW,
    MANY_ABOVE,
    Analysis,
    coerce_labels,
    load_array,
)
from lort.checks import check_counts
from lort.errors import InputError, LabelError
from lort.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from lort.stage2.calibrate import Calibration

DPI = 120
FALLBACK_CLASSES = 3
MIN_BINS, MAX_BINS = 15, 80  # histogram bins: 2 sqrt(positives), clipped
_CHUNK_ELEMENTS = 4_000_000  # logits read per step when histogramming

_POS_COLOR = "tab:blue"
_NEG_COLOR = "tab:orange"
# One colour per method, the twelve of Table 1 first: matplotlib's ten plus two more, each
# far enough from the others to tell apart beside a legend.
PALETTE = (*(f"C{i}" for i in range(10)), "black", "#d4a017")


# ----------------------------------------------------------------------------------
# Helpers shared by the figures


def _new_figure(width: float, height: float) -> Figure:
    """A Figure on the Agg canvas, or an InputError naming the extra to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("drawing figures needs matplotlib: pip install 'lort[plot]'") from None
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path | str) -> Path:
    """Write ``fig`` as PNG through a temp file and a rename; return the path."""
    dest = Path(path)
    try:
        atomic_write(dest, lambda f: fig.savefig(f, format="png", dpi=DPI))
    finally:
        fig.clear()
    return dest


def _by_frequency(counts: np.ndarray) -> np.ndarray:
    """Class indices from the most to the least frequent; ties keep index order."""
    return np.argsort(-counts, kind="stable")


def _percentages(values: Sequence[float | None] | np.ndarray, what: str, n: int) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64) * 100.0
    if a.shape != (n,):
        raise InputError(f"{what} must hold {n} values (one per delta), got shape {a.shape}")
    return a


# ----------------------------------------------------------------------------------
# Class groups


def class_groups_by_frequency(train_counts: np.ndarray, size: int = 10) -> list[np.ndarray]:
    """Classes from the most to the least frequent, cut into consecutive groups.

    Classes are sorted by training count, descending; ties keep class-index order
    (a stable sort). Groups hold ``max(1, min(size, K // 10))`` classes each, so
    ``size`` is used as is once ``K >= 10 * size`` and smaller ``K`` still gives
    about ten points (K = 10: ten single-class groups; K = 20: ten groups of two;
    K = 100: ten groups of ten). The last group may be shorter.
    """
    if size < 1:
        raise InputError(f"group size must be at least 1, got {size}")
    counts = check_counts(train_counts)
    k = counts.size
    step = max(1, min(size, k // 10))
    order = _by_frequency(counts)
    return [order[i : i + step] for i in range(0, k, step)]


# ----------------------------------------------------------------------------------
# Fig. 2: positive and negative logits of the many and few classes


def subsample_rows(
    logits: np.ndarray, labels: np.ndarray, max_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every k-th row, ``k = ceil(rows / max_rows)``, so at most ``max_rows`` remain.

    Slicing a memmap gives a view: no data is read here.
    """
    if max_rows < 1:
        raise InputError(f"max_rows must be at least 1, got {max_rows}")
    if logits.ndim != 2:
        raise InputError(f"logits must be 2-D (rows x classes), got shape {logits.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise LabelError(
            f"{logits.shape[0]} logits rows but labels of shape {labels.shape}; "
            "pass one label per row"
        )
    step = max(1, math.ceil(logits.shape[0] / max_rows))
    return logits[::step], labels[::step]


def load_shards_subsampled(
    paths: Sequence[Path | str], labels: np.ndarray, max_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row shards (.npy, memory-mapped) subsampled evenly and concatenated.

    ``labels`` covers all the shards' rows, in order. Each shard keeps its share
    ``floor(max_rows * rows / total)`` (at least one row), taken every k-th row.
    """
    maps = [np.load(p, mmap_mode="r", allow_pickle=False) for p in paths]
    total = sum(m.shape[0] for m in maps)
    if total != labels.shape[0]:
        raise LabelError(f"the logits files hold {total} rows but {labels.shape[0]} labels")
    parts: list[np.ndarray] = []
    part_labels: list[np.ndarray] = []
    start = 0
    for m in maps:
        rows = m.shape[0]
        budget = max(1, (max_rows * rows) // max(total, 1))
        z, y = subsample_rows(m, labels[start : start + rows], budget)
        parts.append(np.asarray(z))
        part_labels.append(np.asarray(y))
        start += rows
    return np.concatenate(parts), np.concatenate(part_labels)


def histogram_groups(train_counts: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(subplot title, classes) for the many and the few classes.

    An empty group falls back to the 3 most (or least) frequent classes, and the
    title says so.
    """
    counts = check_counts(train_counts)
    order = _by_frequency(counts)
    out = []
    for name, mask, fallback, rule in (
        ("many", counts > MANY_ABOVE, order[:FALLBACK_CLASSES], f"> {MANY_ABOVE}"),
        ("few", counts < FEW_BELOW, order[::-1][:FALLBACK_CLASSES], f"< {FEW_BELOW}"),
    ):
        classes = np.flatnonzero(mask)
        if classes.size:
            title = f"{name} classes ({classes.size}, {rule} training images)"
        else:
            classes = np.sort(fallback)
            extreme = "most" if name == "many" else "least"
            title = (
                f"no {name} classes ({rule} training images): "
                f"the {classes.size} {extreme} frequent shown"
            )
        out.append((title, classes))
    return out


def _group_values_range(
    logits: np.ndarray, labels: np.ndarray, classes: np.ndarray
) -> tuple[float, float] | None:
    lo, hi = math.inf, -math.inf
    for z, _ in _chunks(logits, labels, classes):
        finite = z[np.isfinite(z)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    if lo > hi:
        return None
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _chunks(
    logits: np.ndarray, labels: np.ndarray, classes: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(columns ``classes`` as float64, positive mask) for bounded blocks of rows."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, logits.shape[1]))
    for s in range(0, logits.shape[0], rows):
        block = np.asarray(logits[s : s + rows])
        z = block[:, classes].astype(np.float64)
        pos = np.asarray(labels[s : s + rows])[:, None] == classes[None, :]
        yield z, pos


def _group_histograms(
    logits: np.ndarray, labels: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int] | None:
    """Bin edges, positive and negative counts, and how many values of each."""
    span = _group_values_range(logits, labels, classes)
    if span is None:
        return None
    # Fewer bins when the positives are few (a few class has few test rows).
    n_pos = int(np.isin(labels, classes).sum())
    bins = int(np.clip(round(2 * math.sqrt(n_pos)), MIN_BINS, MAX_BINS))
    edges = np.linspace(span[0], span[1], bins + 1)
    pos_hist = np.zeros(bins, dtype=np.int64)
    neg_hist = np.zeros(bins, dtype=np.int64)
    for z, pos in _chunks(logits, labels, classes):
        finite = np.isfinite(z)
        pos_hist += np.histogram(z[pos & finite], bins=edges)[0]
        neg_hist += np.histogram(z[~pos & finite], bins=edges)[0]
    return edges, pos_hist, neg_hist, int(pos_hist.sum()), int(neg_hist.sum())


def plot_logit_histograms(
    logits: np.ndarray,
    labels: np.ndarray,
    train_counts: np.ndarray,
    path: Path,
    title: str,
    max_rows: int = 200_000,
) -> Path:
    """Paper Fig. 2: densities of positive ``z[y == c, c]`` and negative ``z[y != c, c]``
    logits pooled over the many classes and over the few classes.

    ``logits`` may be a memmap of millions of rows: it is first cut to at most
    ``max_rows`` rows (every k-th, :func:`subsample_rows`), then read in blocks.
    """
    counts = check_counts(train_counts)
    if logits.ndim != 2 or logits.shape[1] != counts.size:
        raise InputError(
            f"logits of shape {logits.shape} do not match {counts.size} training counts"
        )
    z, y = subsample_rows(logits, labels, max_rows)
    y = np.asarray(y)
    if y.size and y.dtype.kind not in "iu":
        raise LabelError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= counts.size):
        raise LabelError(f"labels must lie in [0, {counts.size}), found {y.min()}..{y.max()}")

    fig = _new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for ax, (sub_title, classes) in zip(axes, histogram_groups(counts), strict=True):
        ax.set_title(sub_title, fontsize=10)
        ax.set_xlabel("logit z[:, c]")
        ax.set_ylabel("density")
        hist = _group_histograms(z, y, classes) if z.shape[0] else None
        if hist is None:
            ax.text(0.5, 0.5, "no test rows", ha="center", va="center", transform=ax.transAxes)
            continue
        edges, pos_hist, neg_hist, n_pos, n_neg = hist
        width = np.diff(edges)
        for counts_, n, color, label in (
            (neg_hist, n_neg, _NEG_COLOR, f"negative z[y≠c, c] ({n_neg:,})"),
            (pos_hist, n_pos, _POS_COLOR, f"positive z[y=c, c] ({n_pos:,})"),
        ):
            if n == 0:
                continue
            density = counts_ / (n * width)
            ax.stairs(density, edges, fill=True, alpha=0.35, color=color)
            ax.stairs(density, edges, color=color, linewidth=1.2, label=label)
        ax.legend(fontsize=8, loc="best")
    rows_note = f"{z.shape[0]:,} rows"
    if z.shape[0] < logits.shape[0]:
        rows_note = f"{z.shape[0]:,} of {logits.shape[0]:,} rows, evenly spaced"
    fig.suptitle(f"Positive and negative logits: {title}\n({rows_note})", fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------------------------
# Fig. 3: L and r per group of classes


def _group_means(values: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Mean over each group's finite values; NaN for a group with none."""
    out = np.full(len(groups), np.nan)
    for i, g in enumerate(groups):
        v = values[g]
        v = v[np.isfinite(v)]
        if v.size:
            out[i] = v.mean()
    return out


def _group_label(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def plot_group_metrics(
    per_method: dict[str, tuple[np.ndarray, np.ndarray]],
    train_counts: np.ndarray,
    path: Path,
    title: str,
) -> Path:
    """Paper Fig. 3 (:func:`group_metrics_figure`) written to ``path``."""
    return _save(group_metrics_figure(per_method, train_counts, title), path)


def group_metrics_figure(
    per_method: dict[str, tuple[np.ndarray, np.ndarray]], train_counts: np.ndarray, title: str
) -> Figure:
    """Paper Fig. 3: mean Logits Magnitude L and mean Regularized Std r per group of
    classes (:func:`class_groups_by_frequency`), one line per method; one legend for both
    panels, outside them (twelve methods inside would cover the lines).

    ``per_method`` maps a method name to its (L, r) arrays, one value per class.
    Classes with a NaN or infinite value (no test rows) are left out of a group's
    mean; a group with none left is a gap in the line.
    """
    counts = check_counts(train_counts)
    k = counts.size
    if not per_method:
        raise InputError("plot_group_metrics needs at least one method")
    groups = class_groups_by_frequency(counts)
    starts = np.cumsum([0] + [g.size for g in groups])
    labels = [_group_label(int(a), int(b) - 1) for a, b in itertools.pairwise(starts)]
    x = np.arange(len(groups))

    size = 4 if len(groups) <= 30 else 2
    markers = "osD^vP*Xhp<>"
    fig = _new_figure(12.5, 4.2)
    ax_l, ax_r = fig.subplots(1, 2)
    plotted: dict[Axes, list[tuple[str, np.ndarray]]] = {ax_l: [], ax_r: []}
    for i, (name, (mag, rstd)) in enumerate(per_method.items()):
        style = {"marker": markers[i % len(markers)], "markersize": size}
        style["color"] = PALETTE[i % len(PALETTE)]
        if i >= len(PALETTE):  # a colour again: another line style
            style["linestyle"] = "--"
        mag = np.asarray(mag, dtype=np.float64)
        rstd = np.asarray(rstd, dtype=np.float64)
        if mag.shape != (k,) or rstd.shape != (k,):
            raise InputError(
                f"method {name!r}: L and r must hold {k} values (one per class), "
                f"got shapes {mag.shape} and {rstd.shape}"
            )
        for ax, values in ((ax_l, _group_means(mag, groups)), (ax_r, _group_means(rstd, groups))):
            ax.plot(x, values, label=name, **style)
            plotted[ax].append((name, values))

    per_group = groups[0].size
    what = "single classes" if per_group == 1 else f"groups of {per_group} classes"
    for ax, metric in ((ax_l, "mean Logits Magnitude L"), (ax_r, "mean Regularized Std r")):
        ax.set_title(metric, fontsize=10)
        ax.set_ylabel(metric)
        ax.set_xlabel(f"{what} by training images, most to fewest (0 = most)")
        _set_group_ticks(ax, x, labels)
        ax.grid(alpha=0.3)
        _robust_limits(ax, plotted[ax], labels)
    handles, names = ax_l.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=8)
    fig.suptitle(f"Logits Magnitude and Regularized Std per class group: {title}", fontsize=11)
    return fig


def robust_range(values: np.ndarray) -> tuple[float, float] | None:
    """Limits that leave out a few lone extremes (a Regularized Std of -17 where a class's L is
    about 0, every other r between 0.2 and 1.4): a lowest or highest point whose gap to the
    next is more than three times the span of the points left, at most one in fifty (at least
    one). None when nothing is left out: a tail of several far points, or a single one near
    the rest (CE's L on the most frequent class), is the data and stays."""
    v = np.sort(values[np.isfinite(values)])
    if v.size < 4:
        return None
    lo, hi = 0, v.size - 1
    for _ in range(max(1, v.size // 50)):
        if v[lo + 1] - v[lo] > 3 * (v[hi] - v[lo + 1]):
            lo += 1
        elif v[hi] - v[hi - 1] > 3 * (v[hi - 1] - v[lo]):
            hi -= 1
        else:
            break
    if lo == 0 and hi == v.size - 1:
        return None
    return float(v[lo]), float(v[hi])


def _robust_limits(ax: Axes, lines: list[tuple[str, np.ndarray]], labels: list[str]) -> None:
    """Clip the y axis to :func:`robust_range` of every line's points, with a note on the
    panel naming the points left off (at most three)."""
    limits = robust_range(np.concatenate([v for _, v in lines]))
    if limits is None:
        return
    low, high = limits
    span = (high - low) or 1.0
    ax.set_ylim(low - 0.1 * span, high + 0.1 * span)
    off = [
        f"{name} {value:.3g} at {labels[j]}"
        for name, values in lines
        for j, value in enumerate(values)
        if np.isfinite(value) and not low <= value <= high
    ]
    more = f" and {len(off) - 3} more" if len(off) > 3 else ""
    note = "off the axis: " + "; ".join(off[:3]) + more
    ax.text(0.01, 0.99, note, transform=ax.transAxes, va="top", fontsize=7, color="0.3")


def _set_group_ticks(ax: Axes, x: np.ndarray, labels: list[str]) -> None:
    """Group labels on the x axis, thinned to about 12 so they stay legible."""
    every = max(1, math.ceil(len(x) / 12))
    shown = labels[::every]
    rotation = 45 if len(shown) * max(len(s) for s in shown) > 48 else 0
    ax.set_xticks(x[::every], shown, rotation=rotation)
    ax.set_xlim(-0.5, len(x) - 0.5)


# ----------------------------------------------------------------------------------
# Fig. 4: accuracy against LORT's delta


def plot_smooth_sweep(
    deltas: list[float],
    test_acc: list[float],
    path: Path,
    title: str,
    val_acc: list[float] | None = None,
    chosen: float | None = None,
) -> Path:
    """Paper Fig. 4 (:func:`smooth_sweep_figure`) written to ``path``."""
    return _save(smooth_sweep_figure(deltas, test_acc, title, val_acc, chosen), path)


def smooth_sweep_figure(
    deltas: list[float],
    test_acc: list[float],
    title: str,
    val_acc: list[float] | None = None,
    chosen: float | None = None,
) -> Figure:
    """Paper Fig. 4: accuracy (%) against delta; accuracies are fractions in [0, 1]. The test
    line is top-1 accuracy, the optional validation line the class-mean (balanced) accuracy
    that chooses delta; a dashed vertical line at ``chosen``.
    """
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise InputError("plot_smooth_sweep needs at least one delta")
    order = np.argsort(d, kind="stable")
    fig = _new_figure(6.4, 4.4)
    ax = fig.subplots()
    series = [("test: top-1", test_acc, "tab:blue")]
    if val_acc is not None:
        series.append(("validation: class-mean (balanced), the criterion", val_acc, "tab:green"))
    for name, acc, color in series:
        pct = _percentages(acc, f"{name} accuracies", d.size)
        ax.plot(d[order], pct[order], marker="o", markersize=4, color=color, label=name)
    if chosen is not None:
        ax.axvline(chosen, color="0.3", linestyle="--", linewidth=1, label=f"chosen δ = {chosen:g}")
    ax.set_xlabel("δ (LORT smoothing)")
    what = "test top-1 / validation class-mean" if val_acc is not None else "test top-1"
    ax.set_ylabel(f"accuracy (%): {what}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(f"Accuracy against δ: {title}", fontsize=11)
    return fig


# ----------------------------------------------------------------------------------
# Fig. 5: accuracy over the learning-rate x weight-decay grid


def _grid_index(values: np.ndarray, v: float, what: str) -> int:
    hits = np.flatnonzero(np.isclose(values, v, rtol=1e-6, atol=0.0))
    if hits.size == 0:
        raise InputError(f"chosen {what} {v:g} is not one of the grid's values")
    return int(hits[0])


def plot_lr_wd_heatmap(
    lrs: list[float],
    wds: list[float],
    acc: np.ndarray,
    path: Path,
    title: str,
    chosen: tuple[float, float] | None = None,
) -> Path:
    """Paper Fig. 5: top-1 accuracy (%) over learning rate (rows, y) x weight decay
    (columns, x); ``acc`` has shape ``(len(lrs), len(wds))`` and holds fractions.

    Each cell shows its percentage (one decimal; NaN cells show a dash).
    ``chosen = (lr, wd)``, values from the grid, outlines that cell.
    """
    lr = np.asarray(lrs, dtype=np.float64)
    wd = np.asarray(wds, dtype=np.float64)
    a = np.asarray(acc, dtype=np.float64)
    if a.shape != (lr.size, wd.size) or a.size == 0:
        raise InputError(
            f"acc must have shape (len(lrs), len(wds)) = ({lr.size}, {wd.size}), got {a.shape}"
        )
    pct = a * 100.0
    width = max(4.8, 1.0 + 0.9 * wd.size)
    fig = _new_figure(width, max(3.6, 1.2 + 0.55 * lr.size))
    ax = fig.subplots()
    img = ax.imshow(np.ma.masked_invalid(pct), cmap="viridis", origin="lower", aspect="auto")
    cbar = fig.colorbar(img, ax=ax)
    cbar.set_label("top-1 accuracy (%)")
    ax.set_xticks(np.arange(wd.size), [f"{v:g}" for v in wd])
    ax.set_yticks(np.arange(lr.size), [f"{v:g}" for v in lr])
    ax.set_xlabel("weight decay")
    ax.set_ylabel("learning rate")
    finite = pct[np.isfinite(pct)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    fontsize = 9 if wd.size <= 8 else 7
    for i in range(lr.size):
        for j in range(wd.size):
            v = pct[i, j]
            text = "—" if not math.isfinite(v) else f"{v:.1f}"
            color = "black" if (math.isfinite(v) and v > mid) else "white"
            if not math.isfinite(v):
                color = "0.3"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
    if chosen is not None:
        from matplotlib.patches import Rectangle

        i = _grid_index(lr, chosen[0], "learning rate")
        j = _grid_index(wd, chosen[1], "weight decay")
        ax.add_patch(
            Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5)
        )
    sub = "" if chosen is None else f"\nchosen (outlined): lr {chosen[0]:g}, wd {chosen[1]:g}"
    head = textwrap.fill(f"Accuracy over learning rate x weight decay: {title}", int(width * 9))
    ax.set_title(head + sub, fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------------
# Figs. 2 and 3 of one ``lort analyze``


def plot_analysis(
    folder: Path, logits: Sequence[Path], labels: Path, result: Analysis, title: str
) -> list[Path]:
    """Logit histograms and L / r per class group of an analysis of .npy files (with
    training counts): a memory-mapped file is subsampled to 200,000 rows, shards into memory
    to about 50M logits."""
    counts = result.per_class["train_count"]
    lab = coerce_labels(load_array(labels, "labels"))
    k = result.num_classes
    if len(logits) == 1:
        z = np.load(logits[0], mmap_mode="r", allow_pickle=False)
        max_rows = 200_000
    else:
        max_rows = min(200_000, max(10_000, 50_000_000 // k))
        z, lab = load_shards_subsampled(logits, lab, max_rows)
    name = logits[0].name if len(logits) == 1 else f"{logits[0].name} +{len(logits) - 1}"
    pc = result.per_class
    return [
        plot_logit_histograms(
            z, lab, counts, folder / "logit_histograms.png", title, max_rows=max_rows
        ),
        plot_group_metrics(
            {name: (pc["magnitude"], pc["rstd"])}, counts, folder / "group_metrics.png", title
        ),
    ]


# ----------------------------------------------------------------------------------
# Per-epoch validation and test accuracy of each method's chosen configuration


def plot_epoch_curves(
    curves: dict[str, list[dict[str, float | None]]], path: Path, title: str
) -> Path:
    """The per-epoch curves (:func:`epoch_curves_figure`) written to ``path``."""
    return _save(epoch_curves_figure(curves, title), path)


def epoch_curves_figure(curves: dict[str, list[dict[str, float | None]]], title: str) -> Figure:
    """One panel per method: class-mean accuracy (%) on the validation (green) and test (blue)
    splits after every stage-2 epoch of the configuration the protocol kept, with the kept
    epoch marked. ``curves`` maps a method to its records ``{"epoch", "val_accuracy",
    "test_accuracy"}`` and the kept epoch under ``"kept"``. A post-hoc method (tau-norm, logit
    adjustment: no epochs) has no epoch records, only ``{"val_accuracy", "test_accuracy"}``
    of its rule: its panel draws them as dotted horizontal lines, marked post-hoc, with the
    values written out (its x axis has no epochs)."""
    if not curves:
        raise InputError("plot_epoch_curves needs at least one method")
    from matplotlib.ticker import MaxNLocator

    epochs_of = {
        m: np.array([r["epoch"] for r in records if "epoch" in r], dtype=np.float64)
        for m, records in curves.items()
    }
    cols = min(4, len(curves))
    rows = math.ceil(len(curves) / cols)
    fig = _new_figure(3.2 * cols, 2.5 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True)).ravel()
    splits = (("val_accuracy", "validation", "tab:green"), ("test_accuracy", "test", "tab:blue"))
    for ax, (method, records) in zip(axes, curves.items(), strict=False):
        epochs = epochs_of[method]
        if epochs.size == 0:  # post-hoc: one value per split
            rule = next((r for r in records if "test_accuracy" in r), {})
            written, ys = [], []
            for key, name, color in splits:
                value = rule.get(key)
                if value is None:
                    continue
                (y,) = _percentages([value], name, 1)
                ax.axhline(y, color=color, linestyle=":", linewidth=1.6, label=name)
                written.append(f"{name} {y:.1f}%")
                ys.append(y)
            high = bool(ys) and float(np.mean(ys)) >= 50  # the values, away from the lines
            ax.text(0.5, 0.05 if high else 0.95, "\n".join(written), transform=ax.transAxes,
                    ha="center", va="bottom" if high else "top", fontsize=7)  # fmt: skip
            ax.set_xticks([])
            ax.set_title(f"{method} (post-hoc: no epochs)", fontsize=9)
        else:
            points = [r for r in records if "epoch" in r]
            for key, name, color in splits:
                if any(r.get(key) is None for r in points):
                    continue
                ax.plot(
                    epochs,
                    _percentages([r[key] for r in points], name, len(points)),
                    color=color,
                    label=name,
                    linewidth=1.2,
                )
            kept = next((r["kept"] for r in records if "kept" in r), None)
            if kept is not None:
                ax.axvline(kept, color="0.3", linestyle="--", linewidth=1)
            ax.set_title(method, fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[len(curves) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.supxlabel(
        "stage-2 epoch (dashed: the kept one; dotted: a post-hoc rule's value)", fontsize=9
    )
    fig.supylabel("class-mean accuracy (%)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


def reliability_bins(
    logits: np.ndarray, labels: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of the top softmax probability: the mean confidence, the accuracy
    and the share of rows (NaN where a bin is empty), the bins of the core's ECE."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(labels)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    n = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore"):
        conf = np.bincount(which, confidence, bins) / n
        acc = np.bincount(which, correct.astype(np.float64), bins) / n
    return conf, acc, n / len(confidence)


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], bins: int, path: Path, title: str
) -> Path:
    """Reliability diagram: the accuracy of each confidence bin against its mean confidence
    (the diagonal is calibrated), one line per entry of ``curves`` (label -> logits, labels,
    ECE), and below it how the rows spread over the bins."""
    fig = _new_figure(5.6, 7.0)
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
    edges = np.linspace(0, 1, bins + 1)
    width = 1 / bins / (len(curves) + 1)
    for i, (label, (z, y, ece)) in enumerate(curves.items()):
        conf, acc, share = reliability_bins(z, y, bins)
        keep = np.isfinite(acc)
        top.plot(conf[keep], acc[keep], marker="o", ms=4, label=f"{label} (ECE {ece:.3f})")
        bottom.bar(edges[:-1] + (i + 0.5) * width, share, width=width, align="edge", label=label)
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title="\n".join(textwrap.wrap(title, 48)))
    # Below the axes, where no curve runs under it (the labels hold the group ECEs).
    fig.legend(*top.get_legend_handles_labels(), loc="outside lower center", fontsize=8)
    bottom.set(xlabel="top softmax probability (confidence)", ylabel="share of rows")
    return _save(fig, path)


def plot_calibration(
    logits: np.ndarray, labels: np.ndarray, calibration: Calibration, path: Path, title: str
) -> Path:
    """:func:`plot_reliability` of a classifier's logits raw and over its temperature, each
    labelled with its ECE in the many / medium / few groups and its class-wise ECE."""
    from lort.analysis import ECE_BINS, GROUP_NAMES

    t = calibration.temperature
    if t is None:
        raise InputError("a reliability diagram needs a fitted temperature")
    test = calibration.splits["test"]

    def label(name: str, side: str) -> str:
        scores = test[side]
        groups = scores.get("groups") or {}
        eces = [(groups.get(g) or {}).get("ece") for g in GROUP_NAMES]
        by_group = "/".join("—" if e is None else f"{e:.3f}" for e in eces)
        return f"{name}: many/medium/few {by_group},\nclass-wise {scores['classwise_ece']:.3f}, all"

    after = (
        "temperature 1 (the fitted one failed the held-out check)"
        if t == 1
        else (f"temperature {t:.3g} (fitted on validation)")
    )
    curves = {
        label("raw softmax", "before"): (logits, labels, test["before"]["ece"]),
        label(after, "after"): (logits / t, labels, test["after"]["ece"]),
    }
    return plot_reliability(curves, ECE_BINS, path, title)
