"""The ``lort`` command line: one rich Console for results (stdout) and one for
diagnostics and progress (stderr)."""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from lort import __version__, _core
from lort.analysis import analyze as run_analysis
from lort.errors import LortError
from lort.report import print_analysis, write_json

out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def clean_errors(fn: F) -> F:
    """Bad input ends the command with one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LortError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lort")
def main() -> None:
    """Long-tailed recognition by logits retargeting (LORT, arXiv 2403.00250)."""


existing = click.Path(exists=False, dir_okay=False, path_type=Path)


@main.command()
@click.argument("logits", nargs=-1, type=existing)
@click.option("--labels", type=existing, help="Test labels (.npy of integers), one per row.")
@click.option("--train-counts", type=existing, help="Training images per class (.npy).")
@click.option("--train-labels", type=existing, help="Training labels (.npy); counts are derived.")
@click.option("--json", "json_out", type=existing, help="Write every statistic to this JSON file.")
@click.option(
    "--hessian",
    type=click.Choice(["bound", "exact", "none"]),
    default="bound",
    show_default=True,
    help="Proposition 1 check: Gershgorin bound, exact eigenvalue (K <= 4096), or skip.",
)
@click.option(
    "--nan-policy",
    type=click.Choice(["raise", "omit"]),
    default="raise",
    show_default=True,
    help="Rows with NaN/Inf: stop with an error naming the row, or skip and count them.",
)
@click.option("--threads", type=click.IntRange(min=1), help="Worker threads [LORT_NUM_THREADS].")
@click.option("--example", is_flag=True, help="Analyze a small synthetic long-tailed example.")
@clean_errors
def analyze(
    logits: tuple[Path, ...],
    labels: Path | None,
    train_counts: Path | None,
    train_labels: Path | None,
    json_out: Path | None,
    hessian: str,
    nan_policy: str,
    threads: int | None,
    example: bool,
) -> None:
    """Per-class logit statistics of LOGITS.npy (several files are row shards, merged).

    Prints accuracy, mean Logits Magnitude L and Regularized Standard Deviation r
    overall and for many / medium / few classes, and the Hessian verdict.
    """
    if example:
        if logits or labels or train_counts or train_labels:
            raise click.UsageError("--example takes no logits, labels or train counts")
        from lort.example import write_example

        folder = Path(tempfile.mkdtemp(prefix="lort-example-"))
        paths = write_example(folder)
        err.print(f"example written to {folder}")
        logits, labels, train_counts = (paths["logits"],), paths["labels"], paths["train_counts"]
    if not logits:
        raise click.UsageError("give one or more LOGITS.npy files (or --example)")
    if labels is None:
        raise click.UsageError("--labels is required: a .npy of integer labels, one per row")
    if train_counts is not None and train_labels is not None:
        raise click.UsageError("give --train-counts or --train-labels, not both")

    total = sum(_core.npy_header(p)[1] for p in logits)
    with Progress(
        TextColumn("analyzing"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} rows"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("rows", total=total)
        result = run_analysis(
            list(logits),
            labels,
            train_counts=train_counts,
            train_labels=train_labels,
            hessian=hessian,  # type: ignore[arg-type]
            nan_policy=nan_policy,  # type: ignore[arg-type]
            threads=threads,
            progress=lambda n: bar.update(task, completed=n),
        )
    title = ", ".join(str(p) for p in logits)
    print_analysis(out, result, title)
    if json_out is not None:
        data = result.to_dict()
        data["inputs"] = {
            "logits": [str(p) for p in logits],
            "labels": str(labels),
            "train_counts": None if train_counts is None else str(train_counts),
            "train_labels": None if train_labels is None else str(train_labels),
            "hessian": hessian,
            "nan_policy": nan_policy,
        }
        write_json(json_out, data)
        err.print(f"wrote {json_out}")
