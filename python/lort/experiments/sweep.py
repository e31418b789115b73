"""``lort sweep``: LORT's delta (the paper's Figure 4) and a stage-2 learning rate x weight
decay grid (Figure 5) on one run's frozen features.

Every point is one re-training on the run's feature cache (see :mod:`lort.experiments.points`),
stored in ``RUN/sweep/`` with its fingerprint and reused while that matches. When the run has a
validation split the chosen value is the point with the best class-mean (balanced) accuracy on it,
and only that point's test accuracy is reported as a result; without one nothing is selected and the
test numbers are an illustration. Results go to ``RUN/sweep-smooth.json`` / ``.csv`` and
``RUN/sweep-lr-wd.json`` / ``.csv``, figures to ``RUN/figures/``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lort.analysis import GROUP_NAMES, GROUP_RULE
from lort.errors import InputError
from lort.experiments.points import (
    OnPoint,
    Point,
    compare_point,
    lr_wd_point,
    smooth_point,
    stored_or_measured,
    stored_or_measured_together,
)
from lort.files import finite_or_none
from lort.limits import MAX_GRID, check_grid
from lort.methods import check_delta, get_method, rho
from lort.run.finished import FinishedRun, SmoothPlan, open_run_locked
from lort.stage2.select import ValScore, best_on_validation

TEST_KEYS = ("all", *GROUP_NAMES)
SELECTED = (
    "chosen on the validation split (best class-mean accuracy); the test accuracy of the "
    "other points is recorded for illustration only and played no part in the choice"
)
UNSELECTED = (
    "the run has no validation split: no value is selected, and the test accuracies are "
    "for illustration only (choosing on them would be choosing on the test set)"
)


def parse_values(text: str, option: str, *, low: float, low_open: bool, high: float) -> list[float]:
    """Comma-separated numbers, each in the interval; sorted, repeats dropped."""
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise InputError(f"{option} needs comma-separated numbers, e.g. {option} 0,0.5,0.9")
    values = []
    for p in parts:
        if not p:
            raise InputError(f"{option} {text!r} has an empty entry; separate numbers by commas")
        try:
            v = float(p)
        except ValueError:
            raise InputError(f"{option}: {p!r} is not a number") from None
        inside = (v > low if low_open else v >= low) and v < high
        if not (math.isfinite(v) and inside):
            lo = "(" if low_open else "["
            raise InputError(f"{option} values must lie in {lo}{low:g}, {high:g}), got {p}")
        values.append(v)
    check_grid(values, option)
    return sorted(set(values))


@dataclass
class SweepResult:
    run: FinishedRun
    kind: str  # "smooth" or "lr-wd"
    method: str
    points: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    reused: int
    data: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _record(result: dict[str, Any], **where: Any) -> dict[str, Any]:
    return {
        **where,
        "epoch": result["epoch"],
        "val_balanced_accuracy": result["val_balanced_accuracy"],
        "val_nll": result["val_nll"],
        "test": {k: result["test"][k] for k in (*TEST_KEYS, "balanced_accuracy")},
    }


def _choose(run: FinishedRun, points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The point `lort fit` would choose (:func:`lort.stage2.select.best_on_validation`)."""
    if not run.has_val:
        return None
    scores = [ValScore(p["val_balanced_accuracy"], p["val_nll"]) for p in points]
    return points[best_on_validation(scores)]


def sweep_smooth(
    root: Path, deltas: list[float], on_point: OnPoint | None = None, figures: bool = True
) -> SweepResult:
    """Re-train LORT once per delta with the run's stage-2 settings and seed."""
    if not deltas:
        raise InputError("--smooth needs at least one delta")
    check_grid(deltas, "--smooth")
    for d in deltas:
        check_delta(d, allow_one=False, name="--smooth values")
    notes: list[str] = []
    with open_run_locked(root, notes.append) as run:
        return _sweep_smooth(run, deltas, on_point, figures, notes)


def _sweep_smooth(
    run: FinishedRun,
    deltas: list[float],
    on_point: OnPoint | None,
    figures: bool,
    notes: list[str],
) -> SweepResult:
    method = get_method("lort")
    seed, stage2, stop = run.cfg.seed, run.cfg.stage2, run.problem.stop()
    named = [
        (
            smooth_point(d),
            Point(method, seed, stage2, SmoothPlan("fixed", d), stop),
            f"delta {d:g}",
        )
        for d in deltas
    ]
    measured = stored_or_measured_together(run, named, on_point)
    reused = sum(was_reused for _, was_reused in measured)
    points = [
        _record(result, delta=d, rho=finite_or_none(rho(run.problem.k, d)))
        for d, (result, _) in zip(deltas, measured, strict=True)
    ]
    chosen = _choose(run, points)
    res = SweepResult(run, "smooth", "lort", points, chosen, reused, notes=notes)
    res.data = {
        "run": str(run.root),
        "method": "lort",
        "seed": run.cfg.seed,
        "stage2": dataclasses.asdict(run.cfg.stage2),
        "selection": "validation split" if run.has_val else "none",
        "note": SELECTED if run.has_val else UNSELECTED,
        "chosen": None
        if chosen is None
        else {
            "delta": chosen["delta"],
            "val_balanced_accuracy": chosen["val_balanced_accuracy"],
            "test": chosen["test"],
        },
        "points": points,
        "definitions": _definitions(),
    }
    _write(res, figures)
    return res


def _lr_wd_delta(run: FinishedRun, method_name: str) -> tuple[SmoothPlan, str | None]:
    """A smooth-target method's delta, held fixed over the grid: the run's own, or picked on
    the validation split at the run's stage-2 settings (as `lort fit` / `lort compare` do)."""
    method = get_method(method_name)
    if method.target != "smooth":
        return SmoothPlan("unused"), None
    fixed = run.fit_delta()
    if fixed is not None:
        return SmoothPlan("fixed", fixed[0], source=fixed[1]), fixed[1]
    if not run.has_val:
        raise InputError(
            f"{method_name} needs a delta for the grid: the run's smooth is 'auto' and there is "
            f"no validation split to pick it on; fix one with "
            f"`lort fit --resume --out {run.root} --smooth DELTA`"
        )
    select = SmoothPlan("select", grid=tuple(run.cfg.smooth_grid), source="validation split")
    stop = run.problem.stop()
    point = Point(method, run.cfg.seed, run.cfg.stage2, select, stop)
    # The point `lort compare --protocol shared` makes for this method, seed and stop: shared,
    # not computed twice.
    result, _ = stored_or_measured(run, compare_point(method_name, run.cfg.seed, stop), point)
    why = "picked on the validation split at the run's stage-2 lr and weight decay"
    return SmoothPlan("fixed", float(result["delta"]), source=why), why


def sweep_lr_wd(
    root: Path,
    lrs: list[float] | None,
    wds: list[float] | None,
    method_name: str | None = None,
    on_point: OnPoint | None = None,
    figures: bool = True,
) -> SweepResult:
    """Re-train ``method`` (the run's by default) once per (lr, weight decay) pair."""
    if method_name is not None:
        get_method(method_name)
    check_grid(lrs or [], "--lr")
    check_grid(wds or [], "--wd")
    points = len(lrs or [0]) * len(wds or [0])
    if points > MAX_GRID:
        raise InputError(f"--lr x --wd is a grid of {points:,} points, at most {MAX_GRID:,}")
    notes: list[str] = []
    with open_run_locked(root, notes.append) as run:
        return _sweep_lr_wd(run, lrs, wds, method_name, on_point, figures, notes)


def _sweep_lr_wd(
    run: FinishedRun,
    lrs: list[float] | None,
    wds: list[float] | None,
    method_name: str | None,
    on_point: OnPoint | None,
    figures: bool,
    notes: list[str],
) -> SweepResult:
    st = run.cfg.stage2
    name = method_name or run.cfg.method
    method = get_method(name)
    lr_list = lrs or [st.lr]
    wd_list = wds or [st.weight_decay]
    plan, delta_from = _lr_wd_delta(run, name)
    grid = [(lr, wd) for lr in lr_list for wd in wd_list]
    named = [
        (
            lr_wd_point(name, lr, wd),
            Point(
                method,
                run.cfg.seed,
                dataclasses.replace(st, lr=lr, weight_decay=wd),
                plan,
                run.problem.stop(),
            ),
            f"lr {lr:g} wd {wd:g}",
        )
        for lr, wd in grid
    ]
    measured = stored_or_measured_together(run, named, on_point)
    reused = sum(was_reused for _, was_reused in measured)
    points = [
        _record(result, lr=lr, weight_decay=wd)
        for (lr, wd), (result, _) in zip(grid, measured, strict=True)
    ]
    chosen = _choose(run, points)
    res = SweepResult(run, "lr-wd", name, points, chosen, reused, notes=notes)
    res.data = {
        "run": str(run.root),
        "method": name,
        "seed": run.cfg.seed,
        "epochs": st.epochs,
        "batch_size": st.batch_size,
        "delta": plan.delta if plan.mode == "fixed" else None,
        "delta_from": delta_from,
        "lrs": lr_list,
        "weight_decays": wd_list,
        "selection": "validation split" if run.has_val else "none",
        "note": SELECTED if run.has_val else UNSELECTED,
        "chosen": None
        if chosen is None
        else {
            "lr": chosen["lr"],
            "weight_decay": chosen["weight_decay"],
            "val_balanced_accuracy": chosen["val_balanced_accuracy"],
            "test": chosen["test"],
        },
        "points": points,
        "definitions": _definitions(),
    }
    _write(res, figures)
    return res


# What locates a point of each kind of sweep, first in its table.
KEYS = {"smooth": ("delta", "rho"), "lr-wd": ("lr", "weight_decay")}


def flat_table(res: SweepResult) -> tuple[list[str], list[list[Any]]]:
    """A row per point: where it sits (:data:`KEYS`), the validation score, the test
    accuracies, whether it was chosen; ``sweep-<kind>.csv`` and the Python API's records."""
    keys = KEYS[res.kind]
    header = [*keys, "val_balanced_accuracy", *(f"test_{k}" for k in TEST_KEYS), "chosen"]
    rows = [
        [
            *(p[k] for k in keys),
            p["val_balanced_accuracy"],
            *(p["test"][k] for k in TEST_KEYS),
            int(p is res.chosen),
        ]
        for p in res.points
    ]
    return header, rows


def _write(res: SweepResult, figures: bool) -> None:
    """``RUN/sweep-<kind>.json`` and ``.csv`` (:func:`flat_table`), then the figure."""
    folder, name = res.run.folder, f"sweep-{res.kind}"
    folder.write_json(f"{name}.json", res.data)
    folder.write_csv(f"{name}.csv", *flat_table(res))
    res.files += [folder.path(f"{name}.json"), folder.path(f"{name}.csv")]
    if figures:
        write_figures(res)


def write_figures(res: SweepResult) -> None:
    """``RUN/figures/sweep_smooth.png`` or ``RUN/figures/sweep_lr_wd.png``."""
    run, points, chosen = res.run, res.points, res.chosen
    if res.kind == "smooth":
        from lort.plots import plot_smooth_sweep

        res.files.append(
            plot_smooth_sweep(
                [p["delta"] for p in points],
                [p["test"]["all"] for p in points],
                run.folder.inside("figures/sweep_smooth.png"),
                f"{run.root}, LORT"
                + ("" if run.has_val else " (no validation split: illustration, nothing chosen)"),
                val_acc=[p["val_balanced_accuracy"] for p in points] if run.has_val else None,
                chosen=None if chosen is None else chosen["delta"],
            )
        )
        return
    from lort.plots import plot_lr_wd_heatmap

    lrs, wds = res.data["lrs"], res.data["weight_decays"]
    n = len(wds)
    acc = np.array(
        [[_test_all(p) for p in points[i * n : (i + 1) * n]] for i in range(len(lrs))],
        dtype=np.float64,
    )
    what = "test; chosen on val" if run.has_val else "test; no val split, illustration"
    res.files.append(
        plot_lr_wd_heatmap(
            lrs,
            wds,
            acc,
            run.folder.inside("figures/sweep_lr_wd.png"),
            f"{run.root}, {res.method} ({what})",
            chosen=None if chosen is None else (chosen["lr"], chosen["weight_decay"]),
        )
    )


def _test_all(p: dict[str, Any]) -> float:
    v = p["test"]["all"]
    return math.nan if v is None else float(v)


def _definitions() -> dict[str, str]:
    return {
        "val_balanced_accuracy": "class-mean accuracy on the validation split (the criterion)",
        "val_nll": "mean negative log-likelihood on the validation split (the tie-break)",
        "test": "test top-1 accuracy (fraction): all rows, then the mean per-class accuracy "
        f"over {GROUP_RULE}",
        "rho": "1 + K (1 - delta) / delta, the true-class / other-class target ratio",
    }
