"""``lort keep``: a comparison's winner becomes the run's classifier.

``lort compare`` keeps, beside each (method, seed) result of a protocol, the head that
protocol chose (:func:`lort.experiments.points.kept_head`). Keeping one writes it as the run's
``stage2.pt`` with its method, delta, tau and a temperature fitted on the validation split, its
test logits as ``logits.npy`` and a ``report.json`` that says where it came from; ``lort
predict`` and ``lort export`` then use it. The method is the one with the best validation
score (:func:`lort.stage2.select.best_on_validation` over the methods' mean class-mean accuracy
and NLL across the compared seeds) unless one is named. The test logits are the compare point's
own: the same head through the same inference function.

A choice on validation says how sure it is: a paired bootstrap over the validation images of
the winner against the run's own method and against the runner-up. Where the winner is better
than the run's own method in fewer than :data:`SURE` of the resamples, validation cannot tell
them apart and the run's own method is kept (docs/calibration-and-keep.md has the rule,
docs/results.md the measurements behind it).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from lort.analysis import Analysis
from lort.errors import InputError
from lort.experiments.compare import CompareResult, compare
from lort.experiments.compare import table_name as table_name_of
from lort.experiments.points import OnPoint, ProtocolPoint, kept_head, protocol_point, stored_result
from lort.experiments.protocols import plan
from lort.methods import TABLE1, Method, get_method, make_head
from lort.run.finished import FinishedRun, open_run_locked
from lort.run.fit import history_table
from lort.run.folder import HISTORY, STAGE1
from lort.run.tensorboard import FOLDER as TENSORBOARD
from lort.run.tensorboard import write_tensorboard
from lort.stage2.select import ValScore, best_on_validation

# The protocols a classifier may be kept from: not those that chose on the test set, nor the
# paper's, whose rows are Table 1's formulas (an LDAM on the linear head, MaxNorm without its
# loss) rather than the methods lort ships.
KEEPABLE = ("tuned", "authors")
# The paired bootstrap of a choice on validation: resamples, and the share of them in which the
# validation winner must beat the run's own method to replace it (0.8 had the lowest regret of
# 0.5 to 0.99 on 13 digits and small-folder runs: docs/calibration-and-keep.md).
BOOTSTRAP_SAMPLES = 2000
SURE = 0.8
RULE = (
    f"the validation winner replaces the run's own method only when it is better in >= "
    f"{SURE:.0%} of {BOOTSTRAP_SAMPLES:,} paired bootstrap resamples of the validation images"
)
_NOT_KEPT = {
    "test-selected": " (test-selected chose on the TEST set)",
    "paper-test-selected": " (paper-test-selected chose on the TEST set)",
    "paper": " (the paper protocol runs Table 1's formulas as a study, not the methods lort ships)",
}

# What keep reads of a compare table (compare.json, compare-*.json): the seeds, and the file
# of each method's point per seed.
TABLE_SHAPE = {"seeds": [int], "points": {"*": [str]}, "?search": (str, type(None))}


@dataclass
class Kept:
    method: str
    protocol: str
    seed: int
    record: dict[str, Any]  # report.json's "kept"
    analysis: Analysis
    report: dict[str, Any]  # the run's new report.json (its calibration included)
    notes: list[str]


def _mean(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return float(np.mean(xs)) if xs else None


def keep(
    root: Path,
    method: str | None = None,
    protocol: str = "tuned",
    seed: int | None = None,
    compared: list[str] | None = None,
) -> Kept:
    """Make the compared head of ``method`` (the validation-best one when None) under
    ``protocol`` for ``seed`` (the comparison's first when None) the run's classifier, from the
    comparison of ``compared`` (the twelve methods when None)."""
    if protocol not in KEEPABLE:
        raise InputError(
            f"--protocol {protocol!r}: a classifier is kept from {' or '.join(KEEPABLE)}"
            + _NOT_KEPT.get(protocol, "")
        )
    notes: list[str] = []
    with open_run_locked(root, notes.append) as run:
        table_name = table_name_of(protocol, compared or list(TABLE1)) + ".json"
        return _keep(run, table_name, method, protocol, seed, notes)


def compare_and_keep(
    root: Path, on_point: OnPoint | None = None, figures: bool = True
) -> tuple[CompareResult, Kept]:
    """``lort fit --method auto``'s second half: the tuned comparison of the twelve methods on
    the run's features (one seed, its figures unless ``figures`` is false), then the one best
    on validation kept. The fit has refused a run without a validation split
    (:func:`lort.options.auto_needs_validation`)."""
    res = compare(root, list(TABLE1), 1, on_point=on_point, figures=figures)
    return res, keep(root, None, "tuned", None, list(TABLE1))


def _keep(
    run: FinishedRun,
    table_name: str,
    method: str | None,
    protocol: str,
    seed: int | None,
    notes: list[str],
) -> Kept:
    seeds, results = compared_results(run, table_name, protocol)
    validation: dict[str, Any] | None = None
    if method is None:
        chosen, why, validation = choose(run, results, seeds, protocol)
        notes.append(validation["line"])
    else:
        get_method(method)
        if method not in results:
            raise InputError(
                f"{method} is not in {run.root}/{table_name} (it compared "
                f"{', '.join(results)}); run `lort compare {run.root} --methods {method}`"
            )
        chosen, why = method, "named by the user"
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise InputError(f"--seed {seed}: the comparison ran seeds {seeds}")
    point_name = protocol_point(chosen, seed, protocol)
    stored = results[chosen][seeds.index(seed)]
    saved = _saved_head(run, point_name)
    return _write(run, stored, saved, point_name, protocol, seed, why, validation, notes)


def compared_results(
    run: FinishedRun, table_name: str, protocol: str
) -> tuple[list[int], dict[str, list[dict[str, Any]]]]:
    """The seeds of the comparison ``table_name`` and each method's stored result per seed."""
    if not run.folder.path(table_name).is_file():
        raise InputError(
            f"{run.root} has no {protocol} comparison ({table_name}); run "
            f"`lort compare {run.root}"
            + ("" if protocol == "tuned" else f" --protocol {protocol}")
            + "` first"
        )
    table = run.folder.read_json(table_name, TABLE_SHAPE)
    results: dict[str, list[dict[str, Any]]] = {}
    seeds = list(table["seeds"])
    for name, point_names in table["points"].items():
        results[name] = []
        for s, point_name in zip(seeds, point_names, strict=True):
            # A table without a search was made by the full one (lort before the halving).
            searched = plan(run, name, s, protocol, table.get("search") or "full")
            fp = ProtocolPoint(name, s, searched).fingerprint(run)
            stored = stored_result(run, point_name, fp)
            if stored is None:
                raise InputError(
                    f"{run.root}/{point_name} is missing, damaged or from another version of "
                    f"the run; run `lort compare {run.root}` again (it keeps what is intact)"
                )
            results[name].append(stored)
    return seeds, results


_ROLES = {"own": "the run's own", "runner_up": "runner-up"}


@dataclass(frozen=True)
class Paired:
    """One classifier's class-mean validation accuracy minus another's (mean over the compared
    seeds), its 95% paired bootstrap interval and the share of resamples where it is higher."""

    difference: float
    low: float
    high: float
    p_better: float

    def text(self) -> str:
        return (
            f"{100 * self.difference:+.1f} points [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"
            f", better in {self.p_better:.0%} of resamples"
        )


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, labels: np.ndarray, samples: int = BOOTSTRAP_SAMPLES
) -> Paired:
    """Classifier ``a`` against ``b`` from their S x N correctness (one row per compared seed) on
    the same N validation images (``labels``). The images are resampled within each class, so
    every resample holds the split's classes and the class-mean accuracy stays defined; both
    classifiers and every seed see the same resample. Seeded: the same inputs give the same
    answer."""
    diff = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean(axis=0)
    y = np.asarray(labels)
    rng = np.random.default_rng(0)
    classes = np.unique(y)
    resampled = np.zeros(samples)
    for c in classes:
        d = diff[y == c]
        step = max(1, 2_000_000 // len(d))  # bounds the index matrix of a large class
        for start in range(0, samples, step):
            n = min(step, samples - start)
            resampled[start : start + n] += d[rng.integers(0, len(d), (n, len(d)))].mean(axis=1)
    resampled /= len(classes)
    low, high = np.percentile(resampled, [2.5, 97.5])
    point = float(np.mean([diff[y == c].mean() for c in classes]))
    return Paired(point, float(low), float(high), float(np.mean(resampled > 0)))


def _head(run: FinishedRun, saved: dict[str, Any]) -> tuple[Method, nn.Module, float]:
    """A compared head as :func:`lort.experiments.points.kept_head`'s file holds it."""
    problem = run.problem
    method = get_method(saved["method"])
    head = make_head(method, problem.init.in_features, problem.k, problem.init)
    head.load_state_dict(saved["head"])
    return method, head.eval(), float(saved["tau"])


def _saved_head(run: FinishedRun, point_name: str) -> dict[str, Any]:
    head_file = kept_head(point_name)
    if not run.folder.path(head_file).is_file():
        raise InputError(
            f"{run.root}/{head_file} is missing (the comparison was made by a lort that kept "
            "no heads): run `lort compare` again with a new --out, or keep it with `lort fit "
            "--resume --method ...`"
        )
    return run.folder.load_torch(head_file)


def _val_correct(run: FinishedRun, name: str, seeds: list[int], protocol: str) -> np.ndarray:
    """S x N: whether each compared seed's head of ``name`` gets each validation image right."""
    rows = []
    for s in seeds:
        method, head, tau = _head(run, _saved_head(run, protocol_point(name, s, protocol)))
        logits = run.problem.logits(method, head, "val", tau)
        rows.append(logits.argmax(axis=1) == run.problem.data.val_labels)
    return np.stack(rows)


def choose(
    run: FinishedRun, results: dict[str, list[dict[str, Any]]], seeds: list[int], protocol: str
) -> tuple[str, str, dict[str, Any]]:
    """The method kept without a --method, why, and how sure validation is of it (report.json's
    ``kept.validation``, whose ``line`` the command prints)."""
    names = list(results)
    scores = [
        ValScore(
            _mean([r["val_balanced_accuracy"] for r in results[n]]),
            _mean([r["val_nll"] for r in results[n]]),
        )
        for n in names
    ]
    if all(v.accuracy is None for v in scores):
        raise InputError(f"{run.root} has no validation scores to choose on: name a --method")
    winner = names[best_on_validation(scores)]
    rest = [i for i, n in enumerate(names) if n != winner]
    runner_up = names[rest[best_on_validation([scores[i] for i in rest])]] if rest else None
    own = run.cfg.method if run.cfg.method in results else None
    labels = run.problem.data.val_labels
    correct = {
        n: _val_correct(run, n, seeds, protocol) for n in {winner, runner_up, own} if n is not None
    }
    against: dict[str, dict[str, Any]] = {}
    said = []
    for role, other in (("own", own), ("runner_up", runner_up)):  # against ours first
        if other is None or other == winner or (role == "runner_up" and other == own):
            continue
        paired = paired_bootstrap(correct[winner], correct[other], labels)
        against[role] = {"method": other} | dataclasses.asdict(paired)
        said.append(f"{_ROLES[role]} {other} {paired.text()}")
    told_apart = "own" not in against or against["own"]["p_better"] >= SURE
    chosen = winner if told_apart else (own or winner)
    split = f"validation ({len(labels):,} images, seeds {seeds})"
    vs = "; ".join(said)
    if not told_apart:
        line = (
            f"{split} cannot tell {winner} from the run's own {own} ({vs}): kept {own}, as "
            f"the rule says ({RULE})"
        )
        why = (
            f"the run's own method: validation could not tell it from the best there, {winner} "
            f"(better in {against['own']['p_better']:.0%} of bootstrap resamples, under "
            f"{SURE:.0%})"
        )
    else:
        best = f"{winner}, the run's own method," if winner == own else winner
        line = f"{split} chose {best} against " + (vs or "no other method")
        why = (
            f"the best mean class-mean accuracy on the validation split over seeds {seeds} "
            f"among {len(names)} methods (ties broken by the lower NLL)"
        )
    validation = {
        "images": len(labels),
        "seeds": seeds,
        "winner": winner,
        "own": own,
        "against": against,
        "told_apart": told_apart,
        "rule": RULE,
        "line": line,
    }
    return chosen, why, validation


def _history(run: FinishedRun, stored: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """history.csv for the kept head: the run's stage-1 epochs, then the kept configuration's
    stage-2 epochs as the compare recorded them (validation class-mean accuracy; a post-hoc
    rule has none)."""
    stage1 = run.folder.load_torch(STAGE1)["state"].get("history", [])
    header, rows = history_table(stage1, [])
    rows += [
        ["stage2", e["epoch"], None, None, None, e["val_accuracy"], None]
        for e in stored.get("curve") or []
    ]
    return header, rows


def _write(
    run: FinishedRun,
    stored: dict[str, Any],
    saved: dict[str, Any],
    point_name: str,
    protocol: str,
    seed: int,
    why: str,
    validation: dict[str, Any] | None,
    notes: list[str],
) -> Kept:
    problem = run.problem
    method, head, tau = _head(run, saved)
    logits = problem.logits(method, head, "test", tau)
    analysis = problem.evaluate(logits)
    if analysis.accuracy != stored["test"]["all"]:
        raise InputError(
            f"{run.root}/{point_name}'s head no longer gives its stored test accuracy; run "
            "`lort compare` again"
        )
    calibration = problem.calibration(method, head, tau, logits)
    record = {
        "from": point_name,
        "protocol": protocol,
        "seed": seed,
        "why": why,
        "stage2": stored["stage2"],
        "hyper": stored["chosen"]["hyper"],
        "init": stored["chosen"]["init"],
        "epoch": saved["epoch"],
        "val_balanced_accuracy": stored["val_balanced_accuracy"],
        "val_nll": stored["val_nll"],
    }
    if validation is not None:
        record["validation"] = validation
    report = dict(run.report)
    report |= {
        "method": dataclasses.asdict(method),
        "smooth": stored["smooth"],
        "hyper": {"mode": protocol, "chosen": stored["chosen"]["hyper"]},
        "stage2_epoch": {
            "epoch": saved["epoch"],
            "of": (stored["stage2"] or {}).get("epochs", 0),
            "rule": f"chosen by the {protocol} protocol of `lort compare`",
        },
        "results": analysis.to_dict(),
        "calibration": calibration.to_dict(),
        "kept": record,
    }
    baselines = dict(report.get("baselines") or {})
    baselines["method"] = {"name": method.name} | analysis.group_accuracies()
    report["baselines"] = baselines
    folder = run.folder
    with folder.stage2_outputs():  # all of them, or readers refuse every one
        folder.save_torch(
            "stage2.pt",
            {
                "head": head.state_dict(),
                "method": method.name,
                "smooth": float(saved["smooth"]),
                "tau": tau,
                "temperature": calibration.temperature,
                "kept": point_name,
            },
        )
        folder.write_npy("logits.npy", logits.astype(np.float32))
        history = _history(run, stored)
        folder.write_csv(HISTORY, *history)
        folder.write_json("report.json", report)
        if calibration.temperature is not None:
            from lort.plots import plot_calibration

            plot_calibration(
                logits,
                problem.data.test_labels,
                calibration,
                folder.inside("figures/reliability.png"),
                f"{run.root}: {method.name} (kept from the {protocol} compare), test split",
            )
    if run.cfg.log == "tensorboard":  # the fit's scalars follow history.csv
        if importlib.util.find_spec("tensorboard") is None:
            notes.append(
                f"{folder.path(TENSORBOARD)} still holds the fit's stage 2: tensorboard is not "
                "installed here (pip install 'lort[tensorboard]', then keep again); history.csv "
                "has the kept head's"
            )
        else:
            notes.append(f"TensorBoard: {write_tensorboard(folder, *history)}")
    return Kept(method.name, protocol, seed, record, analysis, report, notes)
