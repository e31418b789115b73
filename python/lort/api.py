"""lort's Python face: the commands of ``lort`` as typed calls, for a notebook or a script.

A run folder is the unit, as on the command line::

    import lort

    run = lort.fit("runs/digits", seed=0)            # lort fit --out runs/digits --seed 0
    run.analysis.overall["accuracy"]                 # the test logits' statistics
    table = run.compare(methods=["lort", "ce"])      # lort compare runs/digits --methods lort,ce
    table.to_pandas()                                # one row per (method, seed)
    run.predict(["new.npy"]).indices()               # lort predict runs/digits new.npy
    run.export("model.onnx", format="onnx")          # lort export ... --format onnx

Each call does what its command does, writes the same files and raises the same
:class:`lort.LortError` where the command would print its one line. Options take the names of
``lort fit``'s flags with underscores (``epochs1``, ``lr2``, ``stage2_stop``) or of
``config.yaml``'s keys. Features already in memory go to :class:`lort.LortClassifier` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lort.analysis import Analysis, analyze
from lort.errors import InputError

if TYPE_CHECKING:
    import pandas

    from lort.config import FitConfig
    from lort.deploy.export import ExportResult
    from lort.deploy.predict import Predictions
    from lort.experiments.protocols import Search

Note = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Table:
    """Rows of a result as records (``columns`` name the fields), the notes the command would
    print, and the files it wrote."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    notes: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()

    @property
    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def to_pandas(self) -> pandas.DataFrame:
        """The rows as a DataFrame (pandas is not a dependency of lort: install it to use
        this)."""
        try:
            import pandas as pd
        except ImportError:
            raise InputError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(list(self.rows), columns=list(self.columns))

    def __len__(self) -> int:
        return len(self.rows)


def _table(
    flat: tuple[list[str], list[list[Any]]], notes: Iterable[str], files: Iterable[Path]
) -> Table:
    header, rows = flat
    return Table(tuple(header), tuple(tuple(r) for r in rows), tuple(notes), tuple(files))


@dataclass
class Run:
    """A finished ``lort fit`` run folder. Opening one reads nothing but its config and report;
    the heavier parts (the feature cache, the classifier) are read by the call that needs
    them, through the same checks as the commands."""

    path: Path
    report: dict[str, Any] = field(repr=False)

    @property
    def config(self) -> FitConfig:
        from lort.config import resolve
        from lort.run.folder import RunFolder, read_config

        return resolve(read_config(RunFolder(self.path)), {})

    @property
    def method(self) -> str:
        """The stage-2 method the run's classifier was re-trained with."""
        return str(self.report["method"]["name"])

    @property
    def analysis(self) -> Analysis:
        """The per-class statistics of the run's test logits (``lort analyze RUN/logits.npy``
        with the run's labels and training counts)."""
        from lort.run.folder import RunFolder

        folder = RunFolder(self.path)
        return analyze(
            folder.load_npy("logits.npy"),
            folder.load_npy("labels.npy"),
            train_counts=folder.load_npy("train_counts.npy"),
        )

    def compare(
        self,
        methods: Sequence[str] | str = "all",
        *,
        seeds: int = 1,
        protocol: str = "tuned",
        search: Search = "halving",
        figures: bool = True,
    ) -> Table:
        """``lort compare``: the methods re-trained on the run's features under ``protocol``
        (tuned, authors, test-selected, paper, paper-test-selected or shared), its
        configurations searched by ``search`` (halving or full, as ``--search``); a row per
        (method, seed)."""
        return compare(
            [self.path], methods, seeds=seeds, protocol=protocol, search=search, figures=figures
        )

    def sweep(
        self,
        *,
        smooth: Sequence[float] | None = None,
        lr: Sequence[float] | None = None,
        weight_decay: Sequence[float] | None = None,
        method: str | None = None,
        figures: bool = True,
    ) -> Table:
        """``lort sweep``: LORT over the deltas of ``smooth``, or ``method`` (the run's by
        default) over an lr x weight-decay grid; a row per point."""
        from lort.experiments.sweep import flat_table, sweep_lr_wd, sweep_smooth

        if smooth is not None and (lr is not None or weight_decay is not None or method):
            raise InputError("sweep either smooth or lr / weight_decay, not both")
        if smooth is not None:
            res = sweep_smooth(self.path, [float(d) for d in smooth], figures=figures)
        elif lr is not None or weight_decay is not None:
            lrs = None if lr is None else [float(x) for x in lr]
            wds = None if weight_decay is None else [float(x) for x in weight_decay]
            res = sweep_lr_wd(self.path, lrs, wds, method, figures=figures)
        else:
            raise InputError("sweep needs smooth=[...] or lr=[...] / weight_decay=[...]")
        return _table(flat_table(res), res.notes, res.files)

    def predict(
        self, inputs: Sequence[str | Path], *, top_k: int = 5, keep_logits: bool = False
    ) -> Predictions:
        """``lort predict``: the top-``top_k`` classes of images, folders of images or ``.npy``
        arrays (``.indices()``, ``.probabilities()``, ``.rows()``)."""
        from lort.deploy.predict import predict

        return predict(self.path, [Path(p) for p in inputs], top_k=top_k, keep_logits=keep_logits)

    def export(self, out: str | Path, *, format: str = "onnx") -> ExportResult:
        """``lort export``: the run's classifier as one module (``torchscript``, ``pt2`` or
        ``onnx``) with the JSON beside it (``out`` + ``.json``), written once it reproduces
        lort's logits."""
        from lort.deploy.export import export

        return export(self.path, format, Path(out))


def open_run(path: str | Path) -> Run:
    """The finished run in ``path``; :class:`lort.InputError` saying what to do when it is not
    one."""
    from lort.run.folder import (
        INFERENCE_NEEDS,
        REPORT,
        REPORT_SHAPE,
        RunFolder,
        require_finished,
    )

    root = Path(path)
    require_finished(root, INFERENCE_NEEDS)
    return Run(root, RunFolder(root).read_json(REPORT, REPORT_SHAPE))


def fit(
    out: str | Path,
    *,
    config: str | Path | Mapping[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    threads: int | None = None,
    figures: bool = True,
    on_note: Note = _quiet,
    **options: Any,
) -> Run:
    """``lort fit --out OUT``: both stages and the evaluation. ``config`` is a YAML file or a
    mapping of ``config.yaml`` keys; ``options`` override it as flags do (``method="lort"``,
    ``smooth=0.9``, ``epochs1=5``; ``method="auto"`` as ``--method auto``). ``on_note``
    receives the plan and notes the command prints, as plain text; ``figures=False`` draws
    no figures (the reliability diagram; with ``method="auto"``, the comparison's too)."""
    from lort.config import load_yaml
    from lort.run.fit import FitOptions, fit_config
    from lort.run.fit import fit as run_fit

    out = Path(out)
    if config is None:
        base: dict[str, Any] = {}
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        base = load_yaml(config)
    source = str(config) if isinstance(config, (str, Path)) else "config"
    cfg, auto = fit_config(out, base, options, resume=resume, source=source)
    opts = FitOptions(
        out=out, resume=resume, overwrite=overwrite, threads=threads, figures=figures, auto=auto
    )
    result = run_fit(cfg, opts, on_note, lambda *_: None)
    if auto:
        from lort.experiments.keep import compare_and_keep

        _, kept = compare_and_keep(result.folder, figures=figures)
        return Run(result.folder, kept.report)
    return Run(result.folder, result.report)


def compare(
    runs: Sequence[str | Path | Run],
    methods: Sequence[str] | str = "all",
    *,
    seeds: int = 1,
    protocol: str = "tuned",
    search: Search = "halving",
    figures: bool = True,
) -> Table:
    """``lort compare``: on one run, a row per (method, seed); on several runs of one dataset
    (backbones), each compared in its own folder and the rows of all of them together.
    ``search`` is ``--search``: successive halving on the choosing split, or the full search
    (every configuration to its last epoch)."""
    from lort.experiments.compare import check_comparable, flat_table, parse_methods
    from lort.experiments.compare import compare as run_compare

    roots = [r.path if isinstance(r, Run) else Path(r) for r in runs]
    if not roots:
        raise InputError("compare needs at least one run folder")
    names = parse_methods(methods if isinstance(methods, str) else ",".join(methods))
    if len(roots) > 1:
        check_comparable(roots)
    header: list[str] = []
    rows: list[list[Any]] = []
    notes: list[str] = []
    files: list[Path] = []
    for root in roots:
        res = run_compare(root, names, seeds, protocol=protocol, search=search, figures=figures)
        header, these = flat_table(res)
        prefix = [str(root)] if len(roots) > 1 else []
        rows += [prefix + r for r in these]
        notes += res.notes
        files += res.files
    if len(roots) > 1:
        header = ["run", *header]
    return _table((header, rows), notes, files)


__all__ = ["Run", "Table", "compare", "fit", "open_run"]
