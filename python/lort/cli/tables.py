"""What people read: rich tables of an analysis, a fit, a compare, a sweep and predictions."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from lort.analysis import GROUP_NAMES, Analysis, Group
from lort.cli.terminal import shown

if TYPE_CHECKING:
    from lort.deploy.predict import Predictions
    from lort.experiments.compare import CompareResult, Pooled
    from lort.experiments.sweep import SweepResult

ACCURACY = ("all", *GROUP_NAMES)


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _pct(v: float | None) -> str:
    """A fraction as a percentage with one decimal."""
    return "—" if v is None else f"{100 * v:.1f}"


def _pct_spread(s: dict[str, Any], spread: bool) -> str:
    """Mean (and ± std, when ``spread``) of a {mean, std} record, as percentages."""
    text = _pct(s["mean"])
    if spread and s["mean"] is not None and s["std"] is not None:
        text += f" ± {100 * s['std']:.1f}"
    return text


def summary_table(a: Analysis, title: str) -> Table:
    """Overall and many / medium / few: classes, accuracy, mean L, mean r."""
    t = Table(title=title, title_justify="left")
    t.add_column("group")
    t.add_column("classes", justify="right")
    t.add_column("top-1 acc", justify="right")
    t.add_column("mean L", justify="right")
    t.add_column("mean r", justify="right")
    rows: list[tuple[str, Group | None]] = [("overall", a.overall_group())]
    if a.groups is not None:
        rows += [(name, a.groups[name]) for name in GROUP_NAMES]
    for name, g in rows:
        if g is None:
            t.add_row(name, "0", "—", "—", "—")
            continue
        acc = None if g.accuracy is None else 100 * g.accuracy
        t.add_row(
            name,
            str(g.classes),
            _fmt(acc, ".2f"),
            _fmt(g.mean_magnitude, ".4f"),
            _fmt(g.mean_rstd, ".4f"),
        )
    return t


def print_analysis(console: Console, a: Analysis, title: str) -> None:
    console.print(summary_table(a, shown(title)))
    bal = None if a.balanced_accuracy is None else 100 * a.balanced_accuracy
    console.print(
        f"rows {a.rows:,}"
        + (f" ({a.omitted_rows:,} with NaN/Inf skipped)" if a.omitted_rows else "")
        + f"  balanced acc {_fmt(bal, '.2f')}  NLL {_fmt(a.nll, '.4f')}"
        + f"  ECE {_fmt(a.ece, '.4f')}"
    )
    if a.groups is None:
        console.print("[dim]many / medium / few need --train-counts or --train-labels[/dim]")
    h = a.hessian
    if h is not None:
        what = "Gershgorin bound on" if h.mode == "bound" else "exact"
        verdict = "[green]PSD[/green]" if h.psd else "[red]NOT PSD[/red]"
        console.print(
            f"Hessian (bias, Prop. 1): {what} lambda_min = {h.lambda_min:.3e} "
            f"(tolerance {h.tolerance:.1e}) -> {verdict}"
        )
        c = h.curvature
        if c is not None:
            how = "exact" if c.method == "exact" else f"Lanczos, {c.passes} passes"
            if not c.converged:
                how += ", [yellow]not converged: lambda_2 is an upper estimate[/yellow]"
            cond = f"{c.condition:.3g}" if math.isfinite(c.condition) else "inf"
            console.print(
                f"curvature on 1-perp ({how}): lambda_2 = {c.lambda_2:.3e}  "
                f"lambda_max = {c.lambda_max:.3e}  condition {cond}"
            )


def print_fit(console: Console, report: dict[str, Any], title: str, a: Analysis) -> None:
    """A finished fit: its analysis, the baselines on the same features, the chosen delta."""
    print_analysis(console, a, title)
    baselines = report.get("baselines", {})
    if len(baselines) >= 2:
        console.print("same features, test accuracy (all / many / medium / few):")
        for key, accs in baselines.items():
            name = accs.get("name", key)
            cols = " / ".join(_pct(accs.get(g)) for g in ACCURACY)
            console.print(f"  {name:14} {cols}")
    sel = report.get("smooth", {})
    if sel.get("mode") == "auto":
        r = "inf" if sel["rho"] is None else f"{sel['rho']:.2f}"
        console.print(f"delta {sel['delta']} chosen on the validation split (rho {r})")
    own = report.get("hyper") or {}
    if own.get("mode") == "auto":
        values = ", ".join(f"{k} {v:g}" for k, v in own["chosen"].items())
        console.print(f"{values} chosen on the validation split")
    kept = report.get("stage2_epoch")
    if kept is not None and kept["epoch"] != kept["of"]:
        console.print(f"stage-2 epoch {kept['epoch']} of {kept['of']} kept: {kept['rule']}")
    print_calibration(console, report.get("calibration"))


def print_calibration(console: Console, cal: dict[str, Any] | None) -> None:
    """The temperature and what it does to the test split's NLL and ECE."""
    if cal is None:
        return
    if cal["temperature"] is None:
        console.print(f"[yellow]probabilities[/yellow] {cal['fitted_on']}")
        return
    before, after = cal["test"]["before"], cal["test"]["after"]
    console.print(
        f"calibrated: temperature {cal['temperature']:.3g} fitted on the {cal['fitted_on']}; "
        f"test ECE {before['ece']:.3f} -> {after['ece']:.3f}, NLL {before['nll']:.3f} -> "
        f"{after['nll']:.3f}, mean top probability {before['mean_top_probability']:.3f} -> "
        f"{after['mean_top_probability']:.3f} (accuracy unchanged)"
    )


# Compare.


def _num(s: dict[str, Any], spec: str = ".3f") -> str:
    return "—" if s["mean"] is None else format(s["mean"], spec)


def _delta(row: dict[str, Any]) -> str:
    ds = [d for d in row["delta"] if d is not None]
    if not ds:
        return "—"
    return ", ".join(dict.fromkeys(f"{d:g}" for d in ds))


_PROTOCOL_TITLE = {
    "tuned": ", tuned: each method's recipe, settings and epoch chosen on the validation split",
    "authors": ", each method's authors' recipe, untuned, last epoch",
    "test-selected": ", [bold red]TEST-SELECTED: settings and epoch chosen on the test set"
    "[/bold red]",
    "paper": ", the paper's protocol: Table 1's formulas, one 20-epoch fine-tune, lr and "
    "weight decay chosen with the epoch on the validation split",
    "paper-test-selected": ", the paper's protocol, [bold red]TEST-SELECTED: lr, weight "
    "decay and epoch chosen on the test set, as the paper reports[/bold red]",
    "shared": ", every method with the run's stage-2 settings, last epoch",
    "shared-val": ", every method with the run's stage-2 settings, epoch chosen on the "
    "validation split",
    "shared-test-selected": ", every method with the run's stage-2 settings, [bold red]"
    "TEST-SELECTED: epoch and delta chosen on the test set[/bold red]",
}


def _chosen(row: dict[str, Any], i: int = 0) -> str:
    """The ``i``-th seed's chosen settings, compactly: lr, weight decay, the method's own."""
    c = row["chosen"][i]
    parts = [] if c["lr"] is None else [f"lr {c['lr']:g}", f"wd {c['weight_decay']:g}"]
    parts += [f"{k} {v:g}" for k, v in c.items() if k not in ("lr", "weight_decay", "epoch")]
    return ", ".join(parts)


def _paper_cell(numbers: dict[str, float | None] | None) -> str:
    """The paper's All / Many / Medium / Few for a row (%), '—' for what it does not print."""
    if not numbers:
        return "—"
    return " / ".join(_pct(numbers[k]) for k in ACCURACY)


def print_compare(console: Console, res: CompareResult) -> None:
    """Table 1 (accuracy, mean ± std over seeds), then mean L and r, then mean ||w_c||,
    each per group."""
    n = len(res.seeds)
    spread = n > 1
    seeds = f"seed {res.seeds[0]}" if n == 1 else f"{n} seeds {res.seeds[0]}..{res.seeds[-1]}"
    acc = Table(
        title=f"{shown(res.run.root)}: test top-1 accuracy (%), {seeds}"
        + (", mean ± std" if spread else "")
        + _PROTOCOL_TITLE[res.label],
        title_justify="left",
    )
    acc.add_column("method")
    for col in ("All", "Many", "Medium", "Few"):
        acc.add_column(col, justify="right")
    chosen = res.protocol not in ("authors", "shared")
    best_trial = res.protocol == "paper-test-selected"
    paper = any(row.get("paper") for row in res.rows)
    if best_trial and spread:
        acc.title = (
            f"{acc.title}; All..Few, delta, epoch and settings: the best seed's, as the paper "
            "reports its best of five (mean ± std in the JSON)"
        )
    if paper:
        acc.add_column("paper All/Many/Med/Few", justify="right")
    acc.add_column("delta", justify="right")
    if res.label != "shared":
        acc.add_column("epoch", justify="right")
    if chosen:
        # the best seed's own settings beside its accuracy, never another seed's
        acc.add_column("chosen (that seed's)" if best_trial else f"chosen (seed {res.seeds[0]})")
    for row in res.rows:
        seed = row["seeds"].index(row["best_trial"]["seed"]) if best_trial else 0
        if best_trial:
            cells = [_pct(row["best_trial"][k]) for k in ACCURACY]
            kept = {**row, "delta": [row["delta"][seed]], "epoch": [row["epoch"][seed]]}
        else:
            cells = [_pct_spread(row[k], spread) for k in ACCURACY]
            kept = row
        if paper:
            cells.append(_paper_cell(row.get("paper")))
        cells.append(_delta(kept))
        if res.label != "shared":
            cells.append(", ".join(str(e) for e in dict.fromkeys(kept["epoch"])))
        if chosen:
            cells.append(_chosen(row, seed))
        acc.add_row(row["method"], *cells)
    console.print(acc)
    first = res.points[res.methods[0]][0]["test"]
    sizes = ", ".join(f"{g} {first[f'classes_{g}']}" for g in GROUP_NAMES)
    short = {"many": "many", "medium": "med", "few": "few"}
    geo = Table(
        title=f"mean L and r per group ({sizes} classes)",
        title_justify="left",
    )
    norms = Table(
        title="mean class weight norm ||w_c|| per group",
        title_justify="left",
    )
    geo.add_column("method")
    norms.add_column("method")
    for q in ("L", "r"):
        for g in GROUP_NAMES:
            geo.add_column(f"{q} {short[g]}", justify="right")
    for g in GROUP_NAMES:
        norms.add_column(g.capitalize(), justify="right")
    for row in res.rows:
        geo.add_row(
            row["method"], *(_num(row[f"{q}_{g}"]) for q in ("L", "r") for g in GROUP_NAMES)
        )
        norms.add_row(row["method"], *(_num(row[f"w_{g}"]) for g in GROUP_NAMES))
    curv = Table(
        title="bias Hessian of the test logits on 1-perp (Prop. 1): lambda_2, condition",
        title_justify="left",
    )
    curv.add_column("method")
    curv.add_column("lambda_2", justify="right")
    curv.add_column("condition", justify="right")
    for row in res.rows:
        curv.add_row(row["method"], _num(row["lambda_2"], ".3e"), _num(row["condition"], ".3g"))
    console.print(geo)
    console.print(norms)
    console.print(curv)
    _print_compare_calibration(console, res)
    if spread:
        console.print(f"[dim]L, r and ||w_c||: means over {n} seeds; std in the JSON[/dim]")
    for row in res.rows:
        if row.get("delta_from") is not None:
            console.print(f"{row['method']}: delta {_delta(row)} ({row['delta_from']})")
    console.print(
        "[dim]||w_c||: the weight vector the head applies at inference (LWS: scale x W, "
        "tau-norm: W / ||W||^tau, cosine: |s|, LDAM's normed layer: 1); see the table's JSON[/dim]"
    )
    for note in res.notes:
        console.print(f"[yellow]note:[/yellow] {shown(note)}")
    if res.protocol in ("paper", "paper-test-selected"):
        for row in res.rows:
            console.print(f"[dim]{row['method']}: {row['formula']}[/dim]")
    if res.select_on == "test" or res.stop == "test":
        console.print(
            "[bold red]these numbers choose on the test set (as much published code does): "
            "they measure the habit's gap, not which method is better[/bold red]"
        )
    if res.pooled is not None:
        print_differences(console, res.pooled)


def _cal_mean(
    cals: list[dict[str, Any]], key: str, side: str, group: str | None = None
) -> float | None:
    """The mean over the seeds of one test score before or after the temperature, of all rows
    or of a group's; None where a seed lacks it (a group without test rows, an older point)."""
    sides = [c["test"][side] for c in cals]
    of = sides if group is None else [(s.get("groups") or {}).get(group) for s in sides]
    values = [None if v is None else v.get(key) for v in of]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def _print_compare_calibration(console: Console, res: CompareResult) -> None:
    """Each method's temperature (fitted on validation) and the test split's NLL, ECE and
    class-wise ECE before and after it, and the ECE after it in the many / medium / few groups
    (means over the seeds); nothing without a validation split."""
    table = Table(
        title="probabilities on the test split: temperature fitted on validation (1: it failed "
        "the held-out check), NLL, ECE and class-wise ECE before -> after, and the ECE after "
        "per group (means over the seeds)",
        title_justify="left",
    )
    for col in ("method", "T", "NLL", "ECE", "class-wise ECE", "ECE many/med/few"):
        table.add_column(col, justify="left" if col == "method" else "right")
    shown_any = False
    for m in res.methods:
        cals = [r.get("calibration") or {} for r in res.points[m]]
        cals = [c for c in cals if c.get("temperature") is not None]
        if not cals:
            continue
        shown_any = True

        def change(key: str, of: list[dict[str, Any]] = cals) -> str:
            return f"{_fmt(_cal_mean(of, key, 'before'), '.3f')} -> " + _fmt(
                _cal_mean(of, key, "after"), ".3f"
            )

        groups = "/".join(_fmt(_cal_mean(cals, "ece", "after", g), ".3f") for g in GROUP_NAMES)
        t = sum(c["temperature"] for c in cals) / len(cals)
        table.add_row(m, f"{t:.3g}", change("nll"), change("ece"), change("classwise_ece"), groups)
    if shown_any:
        console.print(table)


def _diff(iv: dict[str, Any] | None) -> str:
    """A paired difference in points with its interval; 'n.s.' when it holds 0, and why
    not when there is none."""
    if iv is None:
        return "—"
    if iv["low"] is None:
        return f"{100 * iv['mean']:+.1f} ({iv.get('why') or 'too few for an interval'})"
    text = f"{100 * iv['mean']:+.1f} [{100 * iv['low']:+.1f}, {100 * iv['high']:+.1f}]"
    return text if iv["significant"] else text + " n.s."


def print_differences(console: Console, pooled: Pooled) -> None:
    """Each method's paired difference in All accuracy against the reference and the best."""
    n = next((r["vs_best"]["n"] for r in pooled.rows if r["vs_best"] is not None), 0)
    unit = "backbones" if pooled.unit == "backbones" else "stage-2 seeds of one backbone"
    t = Table(
        title=f"paired difference in All accuracy (points), 95% t-interval over {n} {unit}",
        title_justify="left",
    )
    t.add_column("method")
    t.add_column(f"vs {pooled.reference}", justify="right")
    t.add_column(f"vs best ({pooled.best})", justify="right")
    for row in pooled.rows:
        t.add_row(row["method"], _diff(row["vs_reference"]), _diff(row["vs_best"]))
    console.print(t)
    console.print("[dim]n.s.: the interval holds 0; the difference is not significant[/dim]")
    if pooled.unit == "seeds":
        console.print(
            "[dim]the seeds vary stage 2 only: these intervals say nothing about another "
            "backbone; pool runs with `lort compare RUN1 RUN2 ...`[/dim]"
        )


def print_pooled(console: Console, pooled: Pooled) -> None:
    """Several backbones: accuracy per method (mean ± std over the backbones of each
    backbone's seed mean), then the paired differences."""
    t = Table(
        title=f"test top-1 accuracy (%), {len(pooled.runs)} backbones, mean ± std"
        + _PROTOCOL_TITLE[pooled.runs[0].label],
        title_justify="left",
    )
    t.add_column("method")
    for col in ("All", "Many", "Medium", "Few"):
        t.add_column(col, justify="right")
    for row in pooled.rows:
        t.add_row(row["method"], *(_pct_spread(row[k], True) for k in ACCURACY))
    console.print(t)
    print_differences(console, pooled)
    # Each run's notes (search edges, missing curves, the paper's setting), once per text.
    runs: dict[str, list[str]] = {}
    for res in pooled.runs:
        for note in res.notes:
            runs.setdefault(note, []).append(str(res.run.root))
    for note, roots in runs.items():
        where = "every run" if len(roots) == len(pooled.runs) else ", ".join(roots)
        console.print(f"[yellow]note:[/yellow] {shown(where)}: {shown(note)}")


# Sweep.


def _test_line(p: dict[str, Any]) -> str:
    t = p["test"]
    return " / ".join(f"{k.capitalize()} {_pct(t[k])}" for k in ACCURACY)


def print_sweep(console: Console, res: SweepResult) -> None:
    """Validation scores per point and the chosen point's test accuracy; without a
    validation split the test accuracy of every point, said to be an illustration."""
    from lort.experiments.sweep import SELECTED, UNSELECTED

    run = res.run
    what = "validation balanced accuracy (%)" if run.has_val else "test accuracy (%)"
    t = Table()
    if res.kind == "smooth":
        console.print(f"{shown(run.root)}: LORT, {what} per delta")
        t.add_column("delta", justify="right")
        t.add_column("rho", justify="right")
        if run.has_val:
            t.add_column("val balanced acc", justify="right")
        else:
            for k in ACCURACY:
                t.add_column(f"test {k.capitalize()}", justify="right")
        for p in res.points:
            r = "inf" if p["rho"] is None else f"{p['rho']:.2f}"
            cells = (
                [_pct(p["val_balanced_accuracy"])]
                if run.has_val
                else [_pct(p["test"][k]) for k in ACCURACY]
            )
            mark = " ◀" if p is res.chosen else ""
            t.add_row(f"{p['delta']:g}", r, *cells[:-1], cells[-1] + mark)
        console.print(t)
        if res.chosen is not None:
            c = res.chosen
            console.print(
                f"chosen delta {c['delta']:g} (validation balanced accuracy "
                f"{_pct(c['val_balanced_accuracy'])}%): test accuracy {_test_line(c)}"
            )
    else:
        d = res.data
        if not run.has_val:
            what = "test accuracy, All (%)"
        console.print(f"{shown(run.root)}: {res.method}, {what}, stage-2 lr (rows) x weight decay")
        if d["delta"] is not None:
            console.print(f"{res.method}: delta {d['delta']:g} ({d['delta_from']})")
        t.add_column("lr \\ wd", justify="right")
        for wd in d["weight_decays"]:
            t.add_column(f"{wd:g}", justify="right")
        n = len(d["weight_decays"])
        for i, lr in enumerate(d["lrs"]):
            row = res.points[i * n : (i + 1) * n]
            cells = [
                _pct(p["val_balanced_accuracy"] if run.has_val else p["test"]["all"])
                + (" ◀" if p is res.chosen else "")
                for p in row
            ]
            t.add_row(f"{lr:g}", *cells)
        console.print(t)
        if res.chosen is not None:
            c = res.chosen
            console.print(
                f"chosen lr {c['lr']:g}, weight decay {c['weight_decay']:g} (validation "
                f"balanced accuracy {_pct(c['val_balanced_accuracy'])}%): test accuracy "
                f"{_test_line(c)}"
            )
    if run.has_val:
        console.print(f"[dim]{SELECTED}; see {shown(run.root)}/sweep-{res.kind}.json[/dim]")
    else:
        console.print(f"[yellow]{UNSELECTED}[/yellow]")
    for note in res.notes:
        console.print(f"[yellow]note:[/yellow] {shown(note)}")


def print_predictions(console: Console, preds: Predictions) -> None:
    """One row per input: its top classes with their probabilities."""
    run = preds.run
    flips = ", flip-averaged" if run.flips else ""
    rule = f", {run.method.inference}" if run.method.inference else ""
    t = Table(title=f"{shown(run.root)}: {run.method.name}{rule}{flips}", title_justify="left")
    t.add_column("input", overflow="fold")
    rows = preds.rows()
    for r in range(len(rows[0][1]) if rows else 0):
        t.add_column(f"top {r + 1}")
    for name, tops in rows:
        t.add_row(shown(name), *(f"{shown(c)} ({100 * p:.1f}%)" for c, _, p in tops))
    console.print(t)
