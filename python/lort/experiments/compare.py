"""``lort compare``: the paper's Table 1 on one run's frozen features.

Every method (and every seed ``cfg.seed, cfg.seed + 1, ...``) re-trains the classifier on the run's
feature cache and is evaluated on the test split as ``lort fit`` evaluates; the seeds vary stage 2
only (the batch order, flip draws and fresh initialisations), the backbone is the run's. How each
method is trained and what is chosen where is the protocol (:mod:`lort.experiments.protocols`):
``tuned`` (the default), ``authors``, ``test-selected``, ``paper`` (the paper's own Table 1) or
``paper-test-selected``; ``shared`` re-trains every method with
the run's own stage-2 settings (LORT's recipe), keeping the epoch ``stop`` says. Each (method, seed)
is stored under ``RUN/compare/`` with the fingerprint of its settings and reused while that matches,
so an interrupted compare keeps what it finished. The table of the twelve methods goes to
``RUN/compare.json`` / ``.csv`` for the tuned protocol, ``RUN/compare-<protocol>.*`` for the
others, and the tuned protocol's figures to ``RUN/figures/``; a compare of other methods (a few
of them, or compositions) names its own files after them (:func:`table_name`), so it never
replaces the full table.
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lort import files
from lort.analysis import AUTO_EXACT_MAX_CLASSES, GROUP_NAMES, GROUP_RULE
from lort.errors import InputError, OptionError
from lort.experiments.intervals import paired, t_interval
from lort.experiments.points import (
    STOP_NAME,
    OnPoint,
    Point,
    ProtocolPoint,
    compare_point,
    protocol_point,
    stored_or_measured,
)
from lort.experiments.protocols import (
    PAPER_PROTOCOLS,
    PROTOCOL_DEFINITION,
    SEARCH_DEFINITION,
    SEARCHES,
    TEST_SELECTED,
    Plan,
    Search,
    plan,
)
from lort.limits import MAX_SEEDS, check_option_count
from lort.methods import METHODS, TABLE1, WEIGHT_NORM_DEFINITION, get_method
from lort.methods.paper import REPORTED_ON, ROWS, reported
from lort.options import COMPARE_PROTOCOLS
from lort.run.finished import FinishedRun, open_run_locked
from lort.run.folder import RETRAIN_NEEDS, open_saved
from lort.stage2.problem import Stop

ACCURACY = ("all", *GROUP_NAMES)
STOP_DEFINITION = {
    "last": "every re-training reports its last stage-2 epoch",
    "val": "every re-training reports its best epoch on the validation split (class-mean "
    "accuracy, then NLL, then the earliest); LORT's delta is chosen the same way",
    "test": "TEST-SELECTED: every re-training reports its best epoch on the TEST set, and "
    "LORT's delta is chosen there too; the published habit, shown to measure its gap; "
    "these numbers are not a fair comparison",
}
METRICS = (
    *ACCURACY,
    "balanced_accuracy",
    *(f"{q}_{g}" for q in ("L", "r", "w") for g in ("all", *GROUP_NAMES)),
    "lambda_2",
    "condition",
)


def parse_methods(spec: str) -> list[str]:
    """``all`` or a comma-separated list of method names (order kept, repeats dropped)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise InputError(f"--methods needs 'all' or method names; choose from {', '.join(METHODS)}")
    if names == ["all"]:
        return list(TABLE1)
    bad = [n for n in names if n not in METHODS and "+" not in n]
    if bad:
        raise InputError(
            f"unknown method(s) {', '.join(map(repr, bad))} in --methods; choose 'all' or from "
            f"{', '.join(METHODS)}, or join several with + (e.g. lort+logit-adjust)"
        )
    for n in names:
        get_method(n)  # a composition that makes no sense stops here
    return list(dict.fromkeys(names))


def table_name(label: str, methods: list[str]) -> str:
    """The stem of a compare's table (and figure suffix): ``compare`` for the twelve methods of
    Table 1 under the tuned protocol, ``compare-<protocol>`` under another; any other set of
    methods adds them, joined by ``_`` (``compare-lort_ce``, ``compare-shared-lort_ce``; a long
    list becomes its count and a digest). No method name holds ``_``, and no protocol is a
    method, so the names of two different compares never meet."""
    name = "compare" if label == "tuned" else f"compare-{label}"
    if set(methods) == set(TABLE1):
        return name
    slug = "_".join(methods)
    if len(slug) > 80:
        digest = hashlib.sha256(",".join(methods).encode()).hexdigest()[:10]
        slug = f"{len(methods)}-methods-{digest}"
    return f"{name}-{slug}"


def _stats(values: list[float | None]) -> dict[str, Any]:
    xs = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(xs) if xs else None,
        "std": statistics.stdev(xs) if len(xs) > 1 else None,
        "values": values,
    }


@dataclass
class CompareResult:
    run: FinishedRun
    methods: list[str]
    seeds: list[int]
    select_on: str
    points: dict[str, list[dict[str, Any]]]  # method -> one result per seed
    reused: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pooled: Pooled | None = None  # paired differences over the seeds, with two or more
    stop: Stop = "last"  # the shared protocol's kept epoch (lort.stage2.problem.STOP_SPLIT)
    protocol: str = "tuned"
    search: Search = "halving"  # the searching protocols' (lort.experiments.protocols)

    @property
    def label(self) -> str:
        """The protocol as tables and file names show it."""
        if self.protocol != "shared":
            return self.protocol
        return "shared" if self.stop == "last" else f"shared-{STOP_NAME[self.stop]}"

    @property
    def name(self) -> str:
        """The stem of this compare's table files (:func:`table_name`)."""
        return table_name(self.label, self.methods)

    @property
    def subset(self) -> str:
        """What this compare adds to its figures' names: nothing for the twelve methods."""
        return self.name[len(table_name(self.label, list(TABLE1))) :]

    @property
    def definition(self) -> str:
        if self.protocol != "shared":
            return PROTOCOL_DEFINITION[self.protocol]
        return (
            "every method re-trained with the run's stage-2 settings (LORT's recipe); "
            + (STOP_DEFINITION[self.stop])
        )


def compare(
    root: Path,
    methods: list[str],
    seeds: int = 1,
    select_on: str | None = None,
    on_point: OnPoint | None = None,
    figures: bool = True,
    stop: Stop = "last",
    protocol: str = "tuned",
    search: Search = "halving",
) -> CompareResult:
    """Re-train ``methods`` x ``seeds`` on the run in ``root`` under ``protocol``; write the
    table (and, for the tuned protocol, the figures). Under the ``shared`` protocol ``stop``
    keeps each re-training's last epoch, or its best epoch on the validation split, or
    (``"test"``, the published habit, labelled as such) on the test set. The other protocols
    search with ``search`` (:data:`lort.experiments.protocols.SEARCH_DEFINITION`)."""
    check_option_count(seeds, "seeds", 1, MAX_SEEDS)
    if search not in SEARCHES:
        choices = ", ".join(SEARCHES)
        raise OptionError(f"{{search}} must be one of {choices}, got {search!r}", "search")
    if protocol not in COMPARE_PROTOCOLS:
        choices = ", ".join(COMPARE_PROTOCOLS)
        raise OptionError(f"{{protocol}} must be one of {choices}, got {protocol!r}", "protocol")
    if stop not in STOP_NAME:
        raise InputError(f"--epoch must be one of {', '.join(STOP_NAME.values())}, got {stop!r}")
    if protocol != "shared" and (stop != "last" or select_on is not None):
        raise InputError(
            "--epoch and --select-on apply to --protocol shared; the other protocols choose "
            "the epoch and every setting themselves (see `lort compare --help`)"
        )
    for m in methods:
        get_method(m)
    notes: list[str] = []
    with open_run_locked(root, notes.append) as run:
        if protocol != "shared":
            return _compare_protocol(
                run, methods, seeds, protocol, search, on_point, figures, notes
            )
        if select_on is None:
            select_on = "val" if run.has_val else "none"
        if select_on not in ("val", "none"):
            raise InputError(f"--select-on must be val or none, got {select_on!r}")
        if stop == "val" and not run.has_val:
            raise InputError(
                f"{root} has no validation split to pick the epoch on; use --epoch last"
            )
        if select_on == "val" and not run.has_val:
            raise InputError(
                f"{root} has no validation split (val_fraction {run.cfg.val_fraction}); "
                "use --select-on none"
            )
        seed_list = [run.cfg.seed + i for i in range(seeds)]
        # Plans first: a method that cannot run stops the command before any training.
        plans = {m: run.smooth_plan(get_method(m), select_on) for m in methods}
        todo = [(m, s) for m in methods for s in seed_list]
        points: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
        reused = 0
        for i, (m, s) in enumerate(todo):
            point = Point(get_method(m), s, run.cfg.stage2, plans[m], stop)
            result, was_reused = stored_or_measured(run, compare_point(m, s, stop), point)
            reused += was_reused
            points[m].append(result)
            if on_point is not None:
                on_point(i + 1, len(todo), f"{m} seed {s}", was_reused)
        res = CompareResult(
            run,
            methods,
            seed_list,
            select_on,
            points,
            reused,
            notes=notes,
            stop=stop,
            protocol="shared",
        )
        res.rows = [_row(m, points[m], plans[m].mode, plans[m].source) for m in methods]
        _finish(res, figures=False)
        return res


def _compare_protocol(
    run: FinishedRun,
    methods: list[str],
    seeds: int,
    protocol: str,
    search: Search,
    on_point: OnPoint | None,
    figures: bool,
    notes: list[str],
) -> CompareResult:
    seed_list = [run.cfg.seed + i for i in range(seeds)]
    # Plans first: a method that cannot run stops the command before any training.
    plans = {(m, s): plan(run, m, s, protocol, search) for m in methods for s in seed_list}  # type: ignore[arg-type]
    points: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    reused = 0
    for i, ((m, s), p) in enumerate(plans.items()):
        name = protocol_point(m, s, protocol)
        result, was_reused = stored_or_measured(run, name, ProtocolPoint(m, s, p))
        reused += was_reused
        points[m].append(result)
        if on_point is not None:
            label = f"{m} seed {s} ({len(p.candidates)} settings)"
            on_point(i + 1, len(plans), label, was_reused)
    select_on = "test" if protocol in TEST_SELECTED else "val"
    res = CompareResult(
        run,
        methods,
        seed_list,
        select_on,
        points,
        reused,
        notes=notes,
        protocol=protocol,
        search=search,
    )
    res.rows = [_protocol_row(m, points[m], plans[m, seed_list[0]]) for m in methods]
    res.notes.append(_search_note(res))
    if protocol in PAPER_PROTOCOLS:
        for row in res.rows:
            row |= _paper_columns(row["method"], run)
        res.notes.append(_paper_note(run))
    if protocol != "authors":
        res.notes += [n for m in methods for n in _edge_notes(m, points[m])]
        res.notes += [n for m in methods if (n := _no_test_curve_note(m, points[m]))]
    _finish(res, figures=figures and protocol == "tuned")
    return res


def head_epochs(result: dict[str, Any]) -> tuple[int | None, int | None]:
    """A protocol point's head-epochs trained and the full search's for the same (None for a
    point stored before lort counted them)."""
    search = result.get("search") or {}
    return search.get("head_epochs"), search.get("full_head_epochs")


def search_definitions(search: str) -> dict[str, str]:
    """The definitions of a searching protocol's table: its search and the head-epochs."""
    return {
        "search": SEARCH_DEFINITION[search] + " (where a protocol keeps a best epoch of several "
        "configurations; elsewhere every configuration trains to its end)",
        "head_epochs": "epochs trained summed over the heads of each seed's search, the kept "
        "configuration's test-curve re-training included; full_head_epochs: the full "
        "search's for the same",
    }


def _search_note(res: CompareResult) -> str:
    """What the compare's searches trained, in head-epochs, against the full search."""
    points = [r for rs in res.points.values() for r in rs]
    trained = sum(head_epochs(r)[0] or 0 for r in points)
    full = sum(head_epochs(r)[1] or 0 for r in points)
    # The authors and test-selected protocols, and post-hoc rules, train every candidate.
    if not any((r.get("search") or {}).get("name") == "halving" for r in points):
        return f"full search: {trained:,} head-epochs trained"
    return (
        f"halving search: {trained:,} head-epochs trained, the full search's {full:,}"
        + (f" ({full / trained:.1f}x fewer)" if trained else "")
        + "; `--search full` trains every configuration to its last epoch"
    )


def _edge_notes(method: str, results: list[dict[str, Any]]) -> list[str]:
    """A note per searched setting whose chosen value is the smallest or largest tried (for
    some seed): the best may lie outside the search."""
    edges: dict[str, set[str]] = {}
    for r in results:
        table = r["candidates"]
        chosen = {"lr": r["stage2"] and r["stage2"]["lr"], **r["chosen"]["hyper"]}
        for key, value in chosen.items():
            tried = {c["lr"] if key == "lr" else c["hyper"].get(key) for c in table} - {None}
            if value is None or len(tried) < 3:
                continue
            if value in (min(tried), max(tried)):
                edges.setdefault(key, set()).add(f"{value:g}")
    return [
        f"{method}: the chosen {key} ({', '.join(sorted(values))}) is at the edge of the values "
        "searched; the best may lie beyond them"
        for key, values in edges.items()
    ]


def _no_test_curve_note(method: str, results: list[dict[str, Any]]) -> str | None:
    """A note naming the seeds whose kept configuration, trained again alone for its test
    curve, did not reproduce its training in the search (protocols.run_plan)."""
    seeds = [
        str(r["seed"])
        for r in results
        if r.get("curve") and all(e["test_accuracy"] is None for e in r["curve"])
    ]
    if not seeds:
        return None
    return (
        f"{method}: no test curve for seed {', '.join(seeds)}: trained again alone, the kept "
        "configuration did not follow its training in the search (its learning rate amplifies "
        "float rounding); the test numbers are the kept head's own"
    )


def _finish(res: CompareResult, figures: bool) -> None:
    if res.run.cfg.stage2_mode != "cached":
        res.notes.append(
            f"the run trained stage 2 {res.run.cfg.stage2_mode}; compare re-trains every method "
            "on the cached features"
        )
    if len(res.seeds) > 1:
        res.pooled = pool([res])
    _write(res)
    if figures:
        write_figures(res)


def _paper_note(run: FinishedRun) -> str:
    """Whether the paper's numbers apply to this run."""
    dataset, ratio = REPORTED_ON
    if reported(run.cfg.dataset, run.problem.data.manifest.get("imbalance_ratio")):
        return (
            "paper: Table 1's numbers (Table 2's for LORT), measured with ResNet-34 and the "
            "best of five trials on the test set; compare them with --protocol "
            "paper-test-selected for like with like"
        )
    return (
        f"the paper reports Table 1 on {dataset} IR {ratio:g} only; this run is "
        f"{run.cfg.dataset}, so no paper numbers are shown"
    )


def _paper_columns(method: str, run: FinishedRun) -> dict[str, Any]:
    """A paper-protocol row's formula and, where the run is the paper's setting, the paper's
    numbers as fractions (None where the paper prints none)."""
    row = ROWS[method]
    numbers = None
    if reported(run.cfg.dataset, run.problem.data.manifest.get("imbalance_ratio")):
        numbers = {
            k: None if v is None else v / 100 for k, v in zip(ACCURACY, row.reported, strict=True)
        }
    return {"formula": row.formula, "paper_source": row.source, "paper": numbers}


def _best_trial(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The seed with the highest test accuracy and its accuracies: the paper's "best result in
    five trails"."""
    best = max(results, key=lambda r: r["test"]["all"])
    return {"seed": best["seed"], **{k: best["test"][k] for k in ACCURACY}}


def _protocol_row(method: str, results: list[dict[str, Any]], p: Plan) -> dict[str, Any]:
    # The hyperparameters the candidates vary (the others are constants of the protocol).
    searched = {
        k for c in p.candidates for k in c.hyper if len({d.hyper.get(k) for d in p.candidates}) > 1
    }
    row: dict[str, Any] = {
        "method": method,
        "title": get_method(method).title,
        "seeds": [r["seed"] for r in results],
        "delta": [r["delta"] for r in results],
        "chosen": [
            {
                "lr": None if r["stage2"] is None else r["stage2"]["lr"],
                "weight_decay": None if r["stage2"] is None else r["stage2"]["weight_decay"],
                "epoch": r["epoch"],
                **{k: v for k, v in r["chosen"]["hyper"].items() if k in searched},
            }
            for r in results
        ],
        "candidates": len(p.candidates),
        "search": p.search,
        "head_epochs": [head_epochs(r)[0] for r in results],
        "full_head_epochs": [head_epochs(r)[1] for r in results],
        "recipe": p.recipe.to_dict(),
        "val_balanced_accuracy": _stats([r["val_balanced_accuracy"] for r in results]),
        "epoch": [r["epoch"] for r in results],
    }
    for key in METRICS:
        row[key] = _stats([r["test"][key] for r in results])
    if p.protocol == "paper-test-selected":
        row["best_trial"] = _best_trial(results)
    return row


def _row(method: str, results: list[dict[str, Any]], mode: str, source: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "method": method,
        "title": get_method(method).title,
        "seeds": [r["seed"] for r in results],
        "delta": [r["delta"] for r in results],
        "delta_from": {
            "select": "picked on the validation split, per seed",
            "fixed": source,
            "unused": None,
        }[mode],
        "val_balanced_accuracy": _stats([r["val_balanced_accuracy"] for r in results]),
        "epoch": [r["epoch"] for r in results],
    }
    for key in METRICS:
        row[key] = _stats([r["test"][key] for r in results])
    return row


def _write(res: CompareResult) -> None:
    run = res.run
    data = {
        "run": str(run.root),
        "protocol": res.label,
        "epoch": STOP_NAME[res.stop] if res.protocol == "shared" else res.protocol,
        "methods": res.methods,
        "seeds": res.seeds,
        "select_on": res.select_on,
        "search": None if res.protocol == "shared" else res.search,
        "stage2": {
            "mode": "cached",
            "epochs": run.cfg.stage2.epochs,
            "lr": run.cfg.stage2.lr,
            "weight_decay": run.cfg.stage2.weight_decay,
            "batch_size": run.cfg.stage2.batch_size,
            "tau": run.cfg.tau,
        },
        "notes": res.notes,
        "definitions": {
            "all/many/medium/few": "test top-1 accuracy (fraction): all rows, then the mean "
            f"per-class accuracy over {GROUP_RULE}",
            "L_*": "mean Logits Magnitude of the group's classes (see `lort analyze`)",
            "r_*": "mean Regularized Standard Deviation of the group's classes",
            "w_*": WEIGHT_NORM_DEFINITION,
            "lambda_2/condition": "of the test logits' bias Hessian H = mean_n(diag(s_n) - s_n "
            "s_n^T) on the subspace orthogonal to the ones vector (H 1 = 0): its smallest "
            "eigenvalue there and lambda_max / lambda_2 (exact up to K = "
            f"{AUTO_EXACT_MAX_CLASSES:,}, Lanczos above; "
            "condition null when infinite)",
            "val_balanced_accuracy": "class-mean accuracy on the validation split",
            "temperature/test_nll*/test_ece*": "the temperature fitted on the validation split "
            "by NLL and the test split's NLL and ECE before and after it (null without a "
            "validation split)",
            "mean/std": "over the seeds; std is the sample std (n - 1), null for one seed",
            "seeds": "vary stage 2 only (batch order, flip draws, fresh initialisations); the "
            "backbone is the run's",
            "protocol": res.definition,
            **({} if res.protocol == "shared" else search_definitions(res.search)),
        },
        "rows": res.rows,
        "points": {m: [_point_name(res, m, s) for s in res.seeds] for m in res.methods},
    }
    if res.pooled is not None:
        data["differences"] = {
            "unit": "stage-2 seeds of this one backbone (they say nothing of another backbone)",
            "reference": res.pooled.reference,
            "best": res.pooled.best,
            "rows": {
                r["method"]: {k: r[k] for k in ("vs_reference", "vs_best")} for r in res.pooled.rows
            },
        }
    name = res.name
    run.folder.write_json(f"{name}.json", data)
    header, rows = flat_table(res)
    run.folder.write_csv(f"{name}.csv", header, rows)
    res.files += [run.root / f"{name}.json", run.root / f"{name}.csv"]


# The test split's NLL and ECE of each point, raw and over the temperature fitted on the
# validation split (lort.stage2.calibrate).
CALIBRATION = ("temperature", "test_nll", "test_nll_calibrated", "test_ece", "test_ece_calibrated")
FLAT_HEADER = ("method", "seed", "delta", "val_balanced_accuracy", *METRICS, *CALIBRATION)


def _calibration(r: dict[str, Any]) -> list[float | None]:
    """A point's :data:`CALIBRATION` values (None where it has none: no validation split, or
    a point stored before lort calibrated)."""
    cal = r.get("calibration") or {}
    test = cal.get("test") or {}
    before, after = test.get("before") or {}, test.get("after") or {}
    return [cal.get("temperature"), before.get("nll"), after.get("nll"), before.get("ece"),
            after.get("ece")]  # fmt: skip


def flat_table(res: CompareResult) -> tuple[list[str], list[list[Any]]]:
    """One row per (method, seed): the table ``compare.csv`` holds and the Python API's
    records."""
    rows = [
        [
            m,
            r["seed"],
            r["delta"],
            r["val_balanced_accuracy"],
            *(r["test"][k] for k in METRICS),
            *_calibration(r),
        ]
        for m in res.methods
        for r in res.points[m]
    ]
    return list(FLAT_HEADER), rows


def _point_name(res: CompareResult, method: str, seed: int) -> str:
    if res.protocol == "shared":
        return compare_point(method, seed, res.stop)
    return protocol_point(method, seed, res.protocol)


# --------------------------------------------------------------------------------------
# Several backbones, and paired differences.


@dataclass
class Pooled:
    """Methods over several runs (stage-1 backbones) or the stage-2 seeds of one run: the
    accuracy per method over the units, and each method's paired difference in All accuracy
    against ``reference`` (LORT when compared) and against the best method, with 95%
    t-intervals (:mod:`lort.experiments.intervals`)."""

    runs: list[CompareResult]
    unit: str  # "backbones" or "seeds"
    reference: str
    best: str
    rows: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)


def pool(results: list[CompareResult]) -> Pooled:
    """Pool per-run results: units are the runs when there are several (each the mean over
    its seeds), else the seeds of the one run."""
    methods = results[0].methods
    several = len(results) > 1

    def units(m: str, key: str) -> dict[str, float]:
        if several:
            out = {}
            for res in results:
                vals = [r["test"][key] for r in res.points[m] if r["test"][key] is not None]
                if vals:
                    out[str(res.run.root)] = statistics.fmean(vals)
            return out
        return {
            str(r["seed"]): r["test"][key]
            for r in results[0].points[m]
            if r["test"][key] is not None
        }

    per = {m: {k: units(m, k) for k in ACCURACY} for m in methods}
    means = {m: statistics.fmean(per[m]["all"].values()) for m in methods if per[m]["all"]}
    best = max(means, key=lambda m: means[m])
    reference = "lort" if "lort" in methods else methods[0]
    rows = []
    for m in methods:
        row: dict[str, Any] = {"method": m, "title": get_method(m).title}
        for k in ACCURACY:
            row[k] = _stats(list(per[m][k].values()))
        for name, other in (("vs_reference", reference), ("vs_best", best)):
            iv = t_interval(paired(per[m]["all"], per[other]["all"]))
            row[name] = None if m == other or iv is None else iv.to_dict()
        rows.append(row)
    return Pooled(results, "backbones" if several else "seeds", reference, best, rows)


def check_comparable(roots: list[Path]) -> None:
    """Runs pooled together must be finished runs of one dataset and class set: checked from
    their saved config and manifest, before any training."""
    given: dict[Path, Path] = {}
    for root in map(Path, roots):  # one backbone counted twice would narrow every interval
        same = given.get(root.resolve())
        if same is not None:
            twice = f"{root} is given twice" if same == root else f"{same} and {root} are one run"
            raise InputError(f"{twice}: give each run once (each is one backbone of the table)")
        given[root.resolve()] = root
    seen: list[tuple[Path, str, int]] = []
    for root in roots:
        run = open_saved(Path(root), RETRAIN_NEEDS)
        seen.append((run.root, run.cfg.dataset, len(run.manifest["class_names"])))
    first = seen[0]
    for root, dataset, k in seen[1:]:
        if (dataset, k) != first[1:]:
            raise InputError(
                f"{root} ({dataset}, K = {k}) cannot be pooled with {first[0]} ({first[1]}, "
                f"K = {first[2]}): compare runs of one dataset"
            )


POOLED_FILES = ("compare.json", "compare.csv")


def check_pooled_out(out: Path) -> None:
    """The pooled table goes to a new folder, or one holding only an earlier pooled table."""
    if out.exists() and (
        not out.is_dir() or any(p.name not in POOLED_FILES for p in out.iterdir())
    ):
        raise InputError(
            f"--out {out} exists and holds other files; the pooled table goes to a new folder "
            "(or one that holds only an earlier compare.json and compare.csv)"
        )


def write_pooled(pooled: Pooled, out: Path) -> None:
    """OUT/compare.json and OUT/compare.csv of several runs."""
    first = pooled.runs[0]
    data = {
        "runs": [str(r.run.root) for r in pooled.runs],
        "protocol": first.label,
        "search": None if first.protocol == "shared" else first.search,
        "seeds": {str(r.run.root): r.seeds for r in pooled.runs},
        "unit": pooled.unit,
        "reference": pooled.reference,
        "best": pooled.best,
        "definitions": {
            "all/many/medium/few": "mean (std) over the backbones of each backbone's mean over "
            "its stage-2 seeds of the test top-1 accuracy (fraction); many/medium/few are "
            f"class means over {GROUP_RULE}",
            "vs_reference/vs_best": "paired difference in All accuracy (fraction) against the "
            "reference method and the best one, per backbone; mean with a 95% Student-t "
            "interval over the backbones; significant when the interval excludes 0; no "
            "interval (low and high null, why saying so) with fewer than 3 backbones or "
            "differences that do not vary",
            "protocol": first.definition,
            **({} if first.protocol == "shared" else search_definitions(first.search)),
        },
        "rows": pooled.rows,
    }
    files.write_json(out / "compare.json", data)
    header = [
        "method",
        *(f"{k}_mean" for k in ACCURACY),
        "vs_reference_mean",
        "vs_reference_low",
        "vs_reference_high",
        "vs_best_mean",
        "vs_best_low",
        "vs_best_high",
    ]
    rows = []
    for row in pooled.rows:
        cells = [row["method"], *(row[k]["mean"] for k in ACCURACY)]
        for name in ("vs_reference", "vs_best"):
            iv = row[name]
            cells += [None, None, None] if iv is None else [iv["mean"], iv["low"], iv["high"]]
        rows.append(cells)
    files.write_csv(out / "compare.csv", header, rows)
    pooled.files += [out / "compare.json", out / "compare.csv"]


def _array(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def epoch_curves(res: CompareResult) -> dict[str, list[dict[str, Any]]]:
    """Every method's first seed as :func:`lort.plots.epoch_curves_figure` draws it: its kept
    configuration's epochs and the kept one, or for a post-hoc rule (no epochs) its values."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for m in res.methods:
        first = res.points[m][0]
        if first.get("curve"):
            curves[m] = [*first["curve"], {"kept": first["epoch"]}]
        else:
            curves[m] = [
                {
                    "val_accuracy": first["val_balanced_accuracy"],
                    "test_accuracy": first["test"]["balanced_accuracy"],
                }
            ]
    return curves


def write_figures(res: CompareResult) -> None:
    """``RUN/figures/group_metrics.png`` (Fig. 3), ``logit_histograms.png`` (Fig. 2) and
    ``epoch_curves.png`` (each method's kept configuration, epoch by epoch); a compare of other
    methods than the twelve writes ``group_metrics<-methods>.png`` and ``epoch_curves<-methods>
    .png`` (:attr:`CompareResult.subset`). The histograms are of the run's own classifier,
    whatever the methods."""
    from lort.plots import plot_epoch_curves, plot_group_metrics, plot_logit_histograms

    run = res.run
    figs = run.folder.inside("figures/x").parent
    seed = res.seeds[0]
    res.files.append(
        plot_epoch_curves(
            epoch_curves(res),
            figs / f"epoch_curves{res.subset}.png",
            f"{run.root}: the kept configuration of each method per epoch (seed {seed})",
        )
    )
    per_method = {
        m: (
            _array(res.points[m][0]["per_class"]["magnitude"]),
            _array(res.points[m][0]["per_class"]["rstd"]),
        )
        for m in res.methods
    }
    res.files.append(
        plot_group_metrics(
            per_method,
            run.problem.counts,
            figs / f"group_metrics{res.subset}.png",
            f"{run.root}, stage 2 re-trained on its features (test split, seed {seed})",
        )
    )
    logits = run.folder.load_npy("logits.npy", mmap=True)
    labels = run.folder.load_npy("labels.npy")
    counts = run.folder.load_npy("train_counts.npy")
    method = run.report.get("method", {}).get("name", run.cfg.method)
    res.files.append(
        plot_logit_histograms(
            logits,
            labels,
            counts,
            figs / "logit_histograms.png",
            f"{run.root}, test split, the run's own {method} classifier",
        )
    )
