"""The ``lort`` command line: options in, a call, output out. One rich Console for results
(stdout) and one for diagnostics and progress (stderr); the work is in the command modules
(:mod:`lort.run.fit`, :mod:`lort.experiments.compare`, :mod:`lort.experiments.sweep`,
:mod:`lort.deploy.predict`, :mod:`lort.deploy.export`, :mod:`lort.analysis`) and what is printed in
:mod:`lort.cli.tables`."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.progress import Progress
from rich.text import Text

from lort import __version__
from lort.analysis import EXACT_MAX_CLASSES, npy_rows
from lort.analysis import analyze as run_analysis
from lort.cli.progress import Estimate, Heartbeat, duration, progress_bar
from lort.cli.tables import (
    print_analysis,
    print_calibration,
    print_compare,
    print_fit,
    print_pooled,
    print_predictions,
    print_sweep,
)
from lort.cli.terminal import FullWidthConsole, printable, shown
from lort.errors import InputError, LortError, OptionError
from lort.files import write_json
from lort.limits import (
    MAX_BATCH,
    MAX_SEEDS,
    MAX_THREADS,
    MAX_TOP_K,
    MAX_WORKERS,
    env_threads,
)
from lort.options import COMPARE_PROTOCOLS, FIT_OPTIONS, Option, flag_of

if TYPE_CHECKING:
    from lort.experiments.keep import Kept

out_console = FullWidthConsole()
err = FullWidthConsole(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def say(message: str) -> None:
    """A line of the library's plain text on stderr, read as text (not rich markup), its
    ``note:`` in yellow."""
    text = Text(printable(message, newlines=True))
    if message.startswith("note: "):
        text.stylize("yellow", 0, 5)
    err.print(text)


# What an interrupted command tells the user, set by the command once it knows.
CONTINUE = "lort.continue"
KEPT = "finished points are kept: the same command continues from them"


# The optional packages a command may import, by module: (package to pip, lort's extra).
EXTRAS = {
    "torch": ("torch", "train"),
    "torchvision": ("torchvision", "train"),
    "sklearn": ("scikit-learn", "train"),
    "scipy": ("scipy", "train"),
    "yaml": ("pyyaml", "train"),
    "matplotlib": ("matplotlib", "plot"),
    "timm": ("timm", "timm"),
    "safetensors": ("safetensors", "timm"),
    "onnx": ("onnx", "onnx"),
    "onnxscript": ("onnxscript", "onnx"),
}


def missing_extra(e: ImportError) -> str | None:
    """The line for an optional package that is absent (or fails to import): which extra
    installs it. None for any other import error (lort's own: a bug, left to show)."""
    module = (e.name or "").split(".")[0]
    if module not in EXTRAS:
        return None
    package, extra = EXTRAS[module]
    command = click.get_current_context(silent=True)
    what = f"lort {command.info_name}" if command is not None else "this command"
    if isinstance(e, ModuleNotFoundError):
        return f"{what} needs {package}, which is not installed: pip install 'lort[{extra}]'"
    return f"{what} needs {package}, which fails to import ({e}): pip install 'lort[{extra}]'"


# The running command's Heartbeat (the progress lines of output that is not a terminal).
BEAT = "lort.heartbeat"
# A CPU-sized recipe, named when a stage 1 on the CPU would take longer than CPU_LONG seconds.
CPU_RECIPE = "recipes/cifar10-lt-ir100-cpu.yaml"
CPU_LONG = 20 * 60
# What each command does before its first step, for its first progress line.
STARTING = {
    "fit": "reading the data, checking the options",
    "compare": "opening the runs",
    "sweep": "opening the run",
    "predict": "loading the run, reading the inputs",
}


def with_heartbeat(fn: F) -> F:
    """Progress lines for a log: the command's :class:`Heartbeat` runs while it does."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 alone reports
            return fn(*args, **kwargs)
        starting = STARTING.get(ctx.info_name or "", "")
        with Heartbeat(err, f"lort {ctx.info_name}", starting=starting) as beat:
            ctx.meta[BEAT] = beat
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _beat(phase: str, done: int, total: int | None, **kw: Any) -> None:
    beat = click.get_current_context().meta.get(BEAT)
    if beat is not None:
        beat.step(phase, done, total, **kw)


def clean_errors(fn: F) -> F:
    """Bad input ends the command with one line on stderr and a non-zero exit; Ctrl-C with
    a line that says how to continue; an optional package that is not installed with the
    extra that installs it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OptionError as e:  # named as the command line spells the option
            raise click.ClickException(e.spelled(flag_of)) from None
        except ImportError as e:
            line = missing_extra(e)
            if line is None:
                raise
            raise click.ClickException(printable(line)) from None
        except LortError as e:
            raise click.ClickException(printable(e, newlines=True)) from None
        except OSError as e:  # the file system said no: a path the user gave
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(printable(f"{where}{e.strerror or e}")) from None
        except KeyboardInterrupt:
            hint = click.get_current_context().meta.get(CONTINUE)
            err.print(shown("interrupted" + (f"; {hint}" if hint else "")))
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lort")
def main() -> None:
    """Long-tailed recognition by logits retargeting (LORT, arXiv 2403.00250)."""
    # OpenMP threads that wait for work sleep instead of spinning, unless the user says
    # otherwise: spinning threads of a small model on a shared machine take the cores from
    # whatever else runs. Read once, when torch loads; no command imports torch before this.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


existing = click.Path(exists=False, dir_okay=False, path_type=Path)


def _click_option(o: Option) -> Callable[[F], F]:
    """``lort fit``'s flag for one option of :data:`lort.options.FIT_OPTIONS`; every flag is
    None when not given, so that the config file and the dataset's defaults show through."""
    kw: dict[str, Any] = {"help": o.help or None}
    if o.switch == "both":
        return click.option(f"{o.cli}/--no-{o.cli[2:]}", o.key, default=None, **kw)
    if o.switch is not None:
        return click.option(o.cli, o.key, flag_value=o.switch == "on", default=None, **kw)
    if o.choices:
        kw["type"] = click.Choice(list(o.choices))
    elif o.kind == "int":
        bounded = o.minimum is not None or o.maximum is not None
        kw["type"] = click.IntRange(o.minimum, o.maximum) if bounded else int
    elif o.kind in ("number", "number?"):
        kw["type"] = float
    return click.option(o.cli, o.key, **kw)


def fit_options(fn: F) -> F:
    for o in reversed(FIT_OPTIONS):  # click lists a command's options in decorator order
        fn = _click_option(o)(fn)
    return fn


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
    help=f"Proposition 1 check: Gershgorin bound, exact eigenvalues (K <= {EXACT_MAX_CLASSES:,}; "
    f"needs 16 K^2 bytes, 1.06 GB at K = 8,142, {16 * EXACT_MAX_CLASSES**2 / 1e9:.1f} GB at "
    f"{EXACT_MAX_CLASSES:,}), or skip.",
)
@click.option(
    "--curvature",
    type=click.Choice(["auto", "lanczos", "none"]),
    default="auto",
    show_default=True,
    help="lambda_2, lambda_max and condition of the bias Hessian orthogonal to the ones "
    "vector: auto = exact with --hessian exact, else a Lanczos estimate (more passes over "
    "the logits, 2 x 8 x K x 400 bytes, no K x K matrix) for up to 50M logits.",
)
@click.option(
    "--max-memory",
    metavar="SIZE",
    help="Refuse a --hessian exact or Lanczos run that needs more than SIZE (e.g. 2G, 512M).",
)
@click.option(
    "--nan-policy",
    type=click.Choice(["raise", "omit"]),
    default="raise",
    show_default=True,
    help="Rows with NaN/Inf: stop with an error naming the row, or skip and count them.",
)
@click.option(
    "--threads",
    type=click.IntRange(1, MAX_THREADS),
    help=f"Worker threads, at most {MAX_THREADS:,} [LORT_NUM_THREADS].",
)
@click.option("--example", is_flag=True, help="Analyze a small synthetic long-tailed example.")
@click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write logit_histograms.png and group_metrics.png (paper Figs. 2, 3) here.",
)
@clean_errors
def analyze(
    logits: tuple[Path, ...],
    labels: Path | None,
    train_counts: Path | None,
    train_labels: Path | None,
    json_out: Path | None,
    hessian: str,
    curvature: str,
    max_memory: str | None,
    nan_policy: str,
    threads: int | None,
    example: bool,
    plot_dir: Path | None,
) -> None:
    """Per-class logit statistics of LOGITS.npy (several files are row shards, merged).

    Prints accuracy, mean Logits Magnitude L and Regularized Standard Deviation r
    overall and for many / medium / few classes, the Hessian verdict and the
    Hessian's curvature orthogonal to the ones vector.
    """
    from lort.run.folder import check_output, verify_given

    budget = None if max_memory is None else _parse_size(max_memory)
    if threads is None:
        threads = env_threads()  # bounded here: the core would start as many as it says
    if json_out is not None:
        check_output("--json", json_out)
        _outside_runs("--json", json_out.parent)
    if plot_dir is not None:
        for name in ("logit_histograms.png", "group_metrics.png"):
            check_output("--plot", plot_dir / name)
        _outside_runs("--plot", plot_dir)
    if example:
        if logits or labels or train_counts or train_labels:
            raise click.UsageError("--example takes no logits, labels or train counts")
        from lort.example import write_example

        folder = Path(tempfile.mkdtemp(prefix="lort-example-"))
        paths = write_example(folder)
        err.print(shown(f"example written to {folder}"))
        logits, labels, train_counts = (paths["logits"],), paths["labels"], paths["train_counts"]
    if not logits:
        raise click.UsageError("give one or more LOGITS.npy files (or --example)")
    if labels is None:
        raise click.UsageError("--labels is required: a .npy of integer labels, one per row")
    if train_counts is not None and train_labels is not None:
        raise click.UsageError("give --train-counts or --train-labels, not both")
    if plot_dir is not None and train_counts is None and train_labels is None:
        raise click.UsageError("--plot needs --train-counts or --train-labels")

    for given in (*logits, labels, train_counts, train_labels):
        if given is not None:
            verify_given(given)  # a run's own file: checked against its record first
    total = npy_rows(logits)
    with progress_bar(err, "analyzing", unit="rows") as bar:
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
            curvature=curvature,  # type: ignore[arg-type]
            max_memory=budget,
        )
    title = ", ".join(str(p) for p in logits)
    print_analysis(out_console, result, title)
    h = result.hessian
    if curvature == "auto" and h is not None and h.curvature is None and result.num_classes > 1:
        err.print(
            "[dim]curvature skipped at this size (tens of passes over the logits); "
            "--curvature lanczos computes it[/dim]"
        )
    if json_out is not None:
        data = result.to_dict()
        data["inputs"] = {
            "logits": [str(p) for p in logits],
            "labels": str(labels),
            "train_counts": None if train_counts is None else str(train_counts),
            "train_labels": None if train_labels is None else str(train_labels),
            "hessian": hessian,
            "curvature": curvature,
            "nan_policy": nan_policy,
        }
        write_json(json_out, data)
        err.print(shown(f"wrote {json_out}"))
    if plot_dir is not None:
        from lort.plots import plot_analysis

        for written in plot_analysis(plot_dir, list(logits), labels, result, title):
            err.print(shown(f"wrote {written}"))


def _outside_runs(option: str, folder: Path) -> None:
    """InputError when ``folder`` is a lort run or inside one: a file of the user's there
    would make `lort fit --overwrite` refuse the run (it removes only what lort wrote)."""
    from lort.run.folder import STATE

    target = folder.expanduser().absolute()
    for run in (target, *target.parents):
        if (run / STATE).is_file():
            raise InputError(
                f"{option} {folder} is inside the lort run {run}: files of yours there make "
                f"`lort fit --overwrite` refuse the run; write them outside it (`lort compare "
                f"{run}` draws the run's own figures into {run}/figures/)"
            )


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _parse_size(text: str) -> int:
    """Bytes from '2G', '512M', '1.5G' or a plain number (binary units)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _SIZE_UNITS and t[-1:] else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        value = -1.0
    if not 0 < value < 1e20:
        raise click.BadParameter(
            f"{text!r} is not a size; use e.g. 2G, 512M or a number of bytes",
            param_hint="--max-memory",
        )
    return int(value * _SIZE_UNITS[unit])


@main.command()
@click.option(
    "--config", "config_file", type=existing, help="YAML file of options; flags override it."
)
@fit_options
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder [runs/<timestamp>]."
)
@click.option("--resume", is_flag=True, help="Continue a stopped run in --out.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Build the data, check every option and the run folder, print the plan (stderr) and "
    "the config.yaml the run would save (stdout); write nothing.",
)
@click.option("--stop-after", type=click.Choice(["stage1"]), help="Stop after this phase.")
@click.option(
    "--threads",
    type=click.IntRange(1, MAX_THREADS),
    help=f"torch's intra-op threads, at most {MAX_THREADS:,} [LORT_NUM_THREADS, else torch's "
    "choice].",
)
@clean_errors
@with_heartbeat
def fit(
    config_file: Path | None,
    out: Path | None,
    resume: bool,
    overwrite: bool,
    dry_run: bool,
    stop_after: str | None,
    threads: int | None,
    **flags: Any,
) -> None:
    """Train both stages and evaluate: a long-tailed dataset, a backbone with
    cross-entropy and weight decay, then a re-trained classifier (LORT by default)."""
    import time

    from lort.config import load_yaml
    from lort.run.fit import FitOptions, fit_config
    from lort.run.fit import fit as run_fit

    if out is None:
        if resume:
            raise click.UsageError("--resume needs --out: the run folder to continue")
        out = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    base = load_yaml(config_file) if config_file else {}
    click.get_current_context().meta[CONTINUE] = f"continue with `lort fit --resume --out {out}`"
    source = str(config_file) if config_file else str(out / "config.yaml")
    cfg, auto = fit_config(out, base, flags, resume=resume, source=source)
    opts = FitOptions(
        out=out,
        resume=resume,
        overwrite=overwrite,
        dry_run=dry_run,
        stop_after=stop_after,
        threads=threads,
        auto=auto,
    )
    with progress_bar(err, "{task.description:8}", fields="{task.fields[stats]}") as bar:
        tasks: dict[str, Any] = {}
        epochs = {"stage 1": cfg.stage1.epochs, "stage 2": cfg.stage2.epochs}
        estimate = Estimate()
        reporting = BEAT in click.get_current_context().meta  # rank 0 under torchrun

        def progress(phase: str, step: int, total: int, loss: float, acc: float) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total, stats="")
            bar.update(tasks[phase], completed=step, stats=f"loss {loss:.3f} acc {100 * acc:5.1f}%")
            stats = f"loss {loss:.3f}, acc {100 * acc:.1f}%"
            _beat(phase, step, total, epochs=epochs.get(phase), detail=stats)
            timed = estimate.step(step, total) if phase == "stage 1" and reporting else None
            if timed is not None:
                _say_estimate(cfg.device, cfg.stage1.epochs, *timed)

        started = time.perf_counter()
        result = run_fit(cfg, opts, say, progress)
    if dry_run:
        import yaml

        out_console.file.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return
    if result.analysis is None:
        return
    title = f"{cfg.dataset}: {cfg.method} on {cfg.arch}"
    print_fit(out_console, result.report, title, result.analysis)
    timings = result.report.get("timings", {})
    if "stage1_images_per_s" in timings:
        err.print(
            f"stage 1: {timings['stage1_s']:.1f} s, {timings['stage1_images_per_s']:,.0f} images/s"
        )
    err.print(
        shown(
            f"done in {time.perf_counter() - started:.1f} s; results in {result.folder}/ "
            f"(report.json; `lort analyze {result.folder}/logits.npy --labels "
            f"{result.folder}/labels.npy --train-counts {result.folder}/train_counts.npy`)"
        )
    )
    if auto:
        from lort.experiments.keep import compare_and_keep

        bar, on_point = _points_progress("compare")
        with bar:
            compared, kept = compare_and_keep(result.folder, on_point)
        print_compare(out_console, compared)
        _print_kept(result.folder, kept)


def _say_estimate(device: str, epochs: int, left: float, rate: float) -> None:
    """Stage 1's time to go, timed on its first steps; on a CPU, when that is long, the recipe
    sized for one."""
    from lort.runtime import pick_device

    say(f"stage 1: about {duration(left)} to go ({epochs} epochs; {rate:,.1f} steps/s so far)")
    if left > CPU_LONG and pick_device(device).type == "cpu":
        say(
            f"note: a stage 1 sized for a GPU, on the CPU: {CPU_RECIPE} is sized for a CPU "
            "(ResNet-8, 20 epochs: both stages of CIFAR-10-LT in under 20 minutes on 2 cores); "
            f"stop with Ctrl-C and run `lort fit --config {CPU_RECIPE} ...`, or use a GPU"
        )


run_dir_arg = click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))


def _points_progress(label: str) -> tuple[Progress, Callable[[int, int, str, bool], None]]:
    """A transient bar over re-training points (stderr, off when not a terminal)."""
    bar = progress_bar(err, f"{label} " + "{task.fields[point]:18}", unit="")
    task = bar.add_task(label, total=None, point="")

    def on_point(done: int, total: int, name: str, reused: bool) -> None:
        bar.update(task, completed=done, total=total, point=name + (" (cached)" if reused else ""))
        _beat(label, done, total, unit="points", detail=f"last {name}")

    return bar, on_point


@main.command()
@click.argument(
    "run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--methods",
    default="all",
    show_default=True,
    help="'all' (the twelve of Table 1) or comma-separated method names.",
)
@click.option(
    "--protocol",
    type=click.Choice(COMPARE_PROTOCOLS),
    default="tuned",
    show_default=True,
    help="tuned: each method's authors' recipe searched over lr, weight decay and its own "
    "hyperparameter, settings and epoch chosen on the validation split; authors: the recipes "
    "untuned, last epoch; test-selected: the tuned search chosen on the TEST set (labelled; "
    "to measure the habit's gap); paper: the paper's Table 1, each row's formula alone in one "
    "20-epoch fine-tune, lr and weight decay searched, chosen on the validation split; "
    "paper-test-selected: the same chosen on the TEST set, best of the seeds, as the paper "
    "reports (labelled); shared: every method with the run's stage-2 settings.",
)
@click.option(
    "--search",
    type=click.Choice(["halving", "full"]),
    default="halving",
    show_default=True,
    help="How a protocol that keeps a best epoch searches its configurations: successive "
    "halving (those ruled out on the choosing split stop early; head-epochs in the notes) or "
    "full (every configuration to its last epoch).",
)
@click.option(
    "--seeds",
    type=click.IntRange(1, MAX_SEEDS),
    default=1,
    show_default=True,
    help="Stage-2 seeds seed, seed+1, ... (the run's backbone); mean ± std when > 1.",
)
@click.option(
    "--select-on",
    type=click.Choice(["val", "none"]),
    help="--protocol shared: how LORT gets delta when the run's smooth is 'auto': picked on "
    "the validation split as `lort fit` does, or none (the run's delta). [val when the run "
    "has one]",
)
@click.option(
    "--epoch",
    "epoch",
    type=click.Choice(["last", "val", "test-selected"]),
    default="last",
    show_default=True,
    help="--protocol shared: which stage-2 epoch each re-training reports: its last, its best "
    "on the validation split, or its best on the TEST set (the published habit, labelled).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the pooled table of several runs [runs/compare-<timestamp>].",
)
@click.option(
    "--keep",
    "keep_best",
    is_flag=True,
    help="Then make the method best on validation the run's classifier (as `lort keep`).",
)
@clean_errors
@with_heartbeat
def compare(
    run_dirs: tuple[Path, ...],
    methods: str,
    protocol: str,
    search: str,
    seeds: int,
    select_on: str | None,
    epoch: str,
    out: Path | None,
    keep_best: bool,
) -> None:
    """Re-train stage-2 methods on the cached features of each RUN_DIR (the paper's Table 1).

    Under the default protocol every (method, seed) runs its authors' recipe over a search of
    settings, each stopped at its best validation epoch; the best on validation is evaluated on
    the test split as `lort fit` does. Finished ones are kept in RUN_DIR/compare/ and reused.
    Writes RUN_DIR/compare.json and compare.csv (compare-PROTOCOL.* for the others) and, for the
    tuned protocol, figures/ (group_metrics.png, logit_histograms.png, epoch_curves.png); other
    --methods than the twelve add their names (compare-lort_ce.json, group_metrics-lort_ce.png).
    Several RUN_DIRs (stage-1 backbones, e.g. fits with different
    seeds) are pooled: accuracy over the backbones and each method's paired difference
    against LORT and the best method with 95% intervals, written to --out.
    """
    import time

    from lort.experiments.compare import (
        check_comparable,
        check_pooled_out,
        parse_methods,
        pool,
        write_pooled,
    )
    from lort.experiments.compare import compare as run_compare
    from lort.experiments.keep import KEEPABLE
    from lort.experiments.keep import keep as keep_method

    if keep_best and protocol not in KEEPABLE:
        raise click.UsageError(f"--keep keeps from the {' or the '.join(KEEPABLE)} protocol")
    names = parse_methods(methods)
    folder = out or Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    if len(run_dirs) > 1:
        check_pooled_out(folder)
        check_comparable(list(run_dirs))
    click.get_current_context().meta[CONTINUE] = KEPT
    started = time.perf_counter()
    results = []
    for run_dir in run_dirs:
        bar, on_point = _points_progress("compare")
        with bar:
            stop = {"last": "last", "val": "val", "test-selected": "test"}[epoch]
            results.append(
                run_compare(
                    run_dir,
                    names,
                    seeds,
                    select_on,
                    on_point,
                    stop=stop,
                    protocol=protocol,
                    search=search,  # type: ignore[arg-type]
                )
            )
    written = [p for r in results for p in r.files]
    if len(results) == 1:
        print_compare(out_console, results[0])
    else:
        pooled = pool(results)
        write_pooled(pooled, folder)
        print_pooled(out_console, pooled)
        written += pooled.files
    reused = sum(r.reused for r in results)
    total = len(names) * seeds * len(results)
    err.print(
        shown(
            f"{total - reused} re-trained, {reused} reused in "
            f"{time.perf_counter() - started:.1f} s; wrote " + ", ".join(str(p) for p in written)
        )
    )
    if keep_best:
        if len(run_dirs) > 1:
            raise click.UsageError("--keep keeps one run's winner: compare one RUN_DIR")
        _print_kept(run_dirs[0], keep_method(run_dirs[0], None, protocol, None, names))


@main.command()
@run_dir_arg
@click.option("--smooth", help="LORT deltas in [0, 1), comma-separated (the paper's Fig. 4).")
@click.option("--lr", help="Stage-2 learning rates, comma-separated (Fig. 5) [the run's].")
@click.option("--wd", help="Stage-2 weight decays, comma-separated (Fig. 5) [the run's].")
@click.option("--method", help="Method of the --lr/--wd grid [the run's].")
@clean_errors
@with_heartbeat
def sweep(
    run_dir: Path, smooth: str | None, lr: str | None, wd: str | None, method: str | None
) -> None:
    """Re-train on RUN_DIR's cached features over LORT's delta (--smooth) or a stage-2
    learning rate x weight decay grid (--lr / --wd); one re-training per point.

    With a validation split the value is chosen on it and only the chosen point's test
    accuracy is printed; all points are in RUN_DIR/sweep-smooth.json or sweep-lr-wd.json.
    """
    import math
    import time

    from lort.experiments.sweep import parse_values, sweep_lr_wd, sweep_smooth

    grid = lr is not None or wd is not None
    click.get_current_context().meta[CONTINUE] = KEPT
    if smooth is not None and grid:
        raise click.UsageError("give --smooth (a delta sweep) or --lr/--wd (a grid), not both")
    if smooth is None and not grid:
        raise click.UsageError("give --smooth D1,D2,... or --lr X1,X2,... and/or --wd Y1,Y2,...")
    if smooth is not None and method not in (None, "lort"):
        raise click.UsageError("--smooth sweeps LORT's delta; --method is for --lr/--wd grids")
    started = time.perf_counter()
    bar, on_point = _points_progress("sweep")
    if smooth is not None:
        deltas = parse_values(smooth, "--smooth", low=0.0, low_open=False, high=1.0)
        with bar:
            result = sweep_smooth(run_dir, deltas, on_point)
    else:
        inf = math.inf
        lrs = None if lr is None else parse_values(lr, "--lr", low=0.0, low_open=True, high=inf)
        wds = None if wd is None else parse_values(wd, "--wd", low=0.0, low_open=False, high=inf)
        with bar:
            result = sweep_lr_wd(run_dir, lrs, wds, method, on_point)
    print_sweep(out_console, result)
    err.print(
        shown(
            f"{len(result.points) - result.reused} re-trained, {result.reused} reused in "
            f"{time.perf_counter() - started:.1f} s; wrote "
            + ", ".join(str(p) for p in result.files)
        )
    )


@main.command()
@run_dir_arg
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--top-k", type=click.IntRange(1, MAX_TOP_K), default=5, show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the csv / json here [stdout].",
)
@click.option(
    "--logits",
    "logits_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also save every input's logits (.npy, inputs x classes).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, MAX_BATCH),
    default=256,
    show_default=True,
    help="Images per forward pass (256 reproduces the run's own evaluation exactly).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option(
    "--workers", type=click.IntRange(0, MAX_WORKERS), default=0, help="Image decoding workers."
)
@clean_errors
@with_heartbeat
def predict(
    run_dir: Path,
    inputs: tuple[Path, ...],
    top_k: int,
    fmt: str,
    out: Path | None,
    logits_out: Path | None,
    batch_size: int,
    device: str,
    workers: int,
) -> None:
    """Classify INPUTS (image files, folders of images, or .npy arrays of features or images)
    with RUN_DIR's backbone and re-trained classifier, its inference rule and flip averaging.
    """
    import csv
    import json
    import time

    from lort.deploy.predict import predict as run_predict
    from lort.files import write_csv, write_npy
    from lort.run.folder import check_output

    if out is not None and fmt == "table":
        raise click.UsageError("--out writes csv or json: add --format csv or --format json")
    for option, path in (("--out", out), ("--logits", logits_out)):
        if path is not None:
            check_output(option, path)
    with progress_bar(err, "predict", unit="inputs") as bar:
        task = bar.add_task("inputs", total=None)
        started = time.perf_counter()
        preds = run_predict(
            run_dir,
            list(inputs),
            top_k=top_k,
            batch_size=batch_size,
            device=device,
            workers=workers,
            keep_logits=logits_out is not None,
            on_progress=lambda done, total: (
                bar.update(task, completed=done, total=total),
                _beat("predict", done, total, unit="inputs"),
            ),
        )
        seconds = time.perf_counter() - started
    for note in preds.notes:
        err.print(f"[yellow]note:[/yellow] {shown(note)}")
    if fmt == "table":
        print_predictions(out_console, preds)
    elif fmt == "csv":
        header, rows = preds.csv()
        if out is None:
            writer = csv.writer(out_console.file, lineterminator="\n")
            writer.writerow(header)
            writer.writerows([printable(v) for v in row] for row in rows)
        else:
            write_csv(out, header, rows)
    elif out is None:
        out_console.file.write(json.dumps(preds.to_json(), indent=1) + "\n")
    else:
        write_json(out, preds.to_json())
    if logits_out is not None:
        write_npy(logits_out, preds.all_logits())
    n = len(preds.names)
    err.print(
        shown(
            f"classified {n:,} inputs in {seconds:.1f} s ({n / max(seconds, 1e-9):,.0f} per s)"
            + "".join(f"; wrote {p}" for p in (out, logits_out) if p is not None)
        )
    )


@main.command(name="export")
@run_dir_arg
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["torchscript", "pt2", "onnx"]),
    default="torchscript",
    show_default=True,
    help="torchscript (torch.jit.load), pt2 (torch.export.load) or onnx (any ONNX runtime).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The module file (model.pt, model.pt2, model.onnx); its JSON is written beside it "
    "(model.pt.json).",
)
@clean_errors
def export_cmd(run_dir: Path, fmt: str, out: Path) -> None:
    """Write RUN_DIR's classifier as one module from an image batch (a feature batch for a
    features run) to logits, the inference rule and flip averaging folded in, and a JSON
    beside it with the class names, input size and normalisation."""
    from lort.deploy.export import export

    result = export(run_dir, fmt, out)
    checked = f"max relative error {result.max_rel_error:.1e} against lort's own logits"
    err.print(shown(f"wrote {result.out} and {result.json} ({checked})"))


@main.command()
@run_dir_arg
@click.option("--method", help="The method to keep [the best on the validation split].")
@click.option(
    "--protocol",
    type=click.Choice([p for p in COMPARE_PROTOCOLS if p != "shared"]),
    default="tuned",
    show_default=True,
    help="Which comparison to keep from (tuned or authors: the others chose on the test set "
    "or ran the paper's formulas).",
)
@click.option("--seed", type=int, help="Which compared seed's head [the comparison's first].")
@click.option(
    "--methods",
    default="all",
    show_default=True,
    help="Which comparison to keep from: the --methods it was run with.",
)
@clean_errors
def keep(run_dir: Path, method: str | None, protocol: str, seed: int | None, methods: str) -> None:
    """Make a method's head from RUN_DIR's `lort compare` the run's classifier, as the
    comparison chose it (settings, epoch), calibrated on the validation split; `lort predict`
    and `lort export` then use it."""
    from lort.experiments.compare import parse_methods
    from lort.experiments.keep import keep as run_keep

    kept = run_keep(run_dir, method, protocol, seed, parse_methods(methods))
    _print_kept(run_dir, kept)


def _print_kept(run_dir: Path, kept: Kept) -> None:
    for note in kept.notes:
        say(f"note: {note}")
    rec = kept.record
    settings = ", ".join(f"{k} {v:g}" for k, v in rec["hyper"].items())
    stage = rec["stage2"]
    if stage is not None:
        settings = f"lr {stage['lr']:g}, wd {stage['weight_decay']:g}" + (
            f", {settings}" if settings else ""
        )
    title = f"{kept.method}, kept from the {kept.protocol} compare"
    print_analysis(out_console, kept.analysis, title)
    print_calibration(out_console, kept.report["calibration"])
    err.print(
        shown(
            f"kept {kept.method} (seed {kept.seed}; {settings or 'post hoc'}; epoch "
            f"{rec['epoch']}): {rec['why']}; `lort predict {run_dir} ...` and `lort export "
            f"{run_dir} ...` use it"
        )
    )
