"""Presenting results: rich tables on screen, JSON files written atomically."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from rich.console import Console
from rich.table import Table

from lort.analysis import GROUP_NAMES, Analysis, Group
from lort.atomic import atomic_write


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


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
    console.print(summary_table(a, title))
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


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write JSON through a temp file and a rename, so a reader never sees half a file."""
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
