"""Stored re-training results of ``lort compare`` and ``lort sweep``: what a point is, where
it lives in the run folder, and when a stored one is reused.

A point is one stage-2 re-training on a finished run's feature cache (for LORT with delta
picked on validation, one per delta of the grid plus the final one), measured as ``lort fit``
measures its own: re-training the run's method with the run's settings and seed gives the
numbers of ``lort fit --resume --out RUN --method M``, bit for bit. Nothing here touches the
backbone.

Each point is stored as a JSON file together with a *fingerprint*, a dict of everything that
determines its numbers (the run's stage-1 classifier and data, the method, seed, stage-2
settings, and the delta / tau / flip settings the method reads). A stored point is reused only
when its fingerprint equals the one asked for. This module owns the points' file names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from lort import __version__
from lort.analysis import GROUP_NAMES, Analysis, curvature, finite_mean, shot_groups
from lort.errors import DamagedFileError
from lort.experiments.protocols import Plan, curves_agree, run_plan
from lort.files import finite_or_none, jsonable
from lort.methods import Method, inference_weight_norms
from lort.optim import StageConfig
from lort.run.finished import FinishedRun, SmoothPlan
from lort.stage2.problem import STOP_SPLIT, Stop, own_grids
from lort.stage2.select import ValScore

# 2: bias-Hessian curvature; 3: validation NLL; 4: the kept epoch; 5: recipes (MaxNorm's
# relative radius per epoch, tau-norm without bias, the class-balanced losses' reduction);
# 6: a searched point's test curve only where it is the kept head's (protocols.run_plan);
# 7: the search that made a protocol point (halving or full) and the head-epochs it trained
# (a point without them was made by the full search)
POINT_VERSION = 7

# A stored point as :func:`stored_or_measured` writes it (:func:`lort.files.check_shape`): the
# result as :func:`_evaluate` and :func:`measure_protocol` make it, every number a number (or
# None where a split or a group has none), so that a table never prints or sums a string.
_NONE = type(None)
_NUMBER = (float, _NONE)  # float admits integers
_SCORES = {
    "nll": _NUMBER,
    "ece": _NUMBER,
    "mean_top_probability": _NUMBER,
    "?classwise_ece": _NUMBER,
    "?groups": {"*": ({"*": _NUMBER}, _NONE)},
}
_SPLIT_SCORES = {"before": _SCORES, "?after": _SCORES}
_TEST_SUMMARY = {
    key: int if key.startswith("classes_") else _NUMBER
    for key in (
        "all",
        "balanced_accuracy",
        "lambda_2",
        "condition",
        *(f"{m}_{g}" for g in ("all", *GROUP_NAMES) for m in "Lrw"),
        *(f"{m}{g}" for g in GROUP_NAMES for m in ("", "classes_")),
    )
}
RESULT_SHAPE = {
    "method": str,
    "seed": int,
    "stage2": ({"epochs": int, "lr": float, "weight_decay": float, "batch_size": int}, _NONE),
    "delta": _NUMBER,
    "smooth": {"mode": str, "*": (str, float, _NONE, [_NUMBER])},
    "epoch": int,
    "stop": str,
    "val_balanced_accuracy": _NUMBER,
    "val_nll": _NUMBER,
    "test": _TEST_SUMMARY,
    "calibration": {
        "temperature": _NUMBER,
        "fitted_on": str,
        "?val": _SPLIT_SCORES,
        "test": _SPLIT_SCORES,
        "?check": {"*": _NUMBER},
    },
    "per_class": {k: [_NUMBER] for k in ("accuracy", "magnitude", "rstd", "weight_norm")},
    "?hyper": dict,
    "?protocol": str,
    "?chosen": {"init": str, "hyper": {"*": _NUMBER}, "chosen_on": str},
    "?candidates": [{"?hyper": {"*": _NUMBER}, "*": (float, _NONE, dict)}],
    "?curve": [{"epoch": int, "val_accuracy": _NUMBER, "test_accuracy": _NUMBER}],
    "?search": {"name": str, "head_epochs": int, "full_head_epochs": int},
}
POINT_SHAPE = {"fingerprint": dict, "result": RESULT_SHAPE}

# The stopping protocols as users name them (``lort compare --epoch``).
STOP_NAME = {"last": "last", "val": "val", "test": "test-selected"}

OnPoint = Callable[[int, int, str, bool], None]
"""on_point(done, total, label, reused) after every point."""


def compare_point(method: str, seed: int, stop: Stop = "last") -> str:
    """Where ``lort compare`` keeps one (method, seed) of a stopping protocol."""
    suffix = "" if stop == "last" else f"-{STOP_NAME[stop]}"
    return f"compare/{method}-seed{seed}{suffix}.json"


def protocol_point(method: str, seed: int, protocol: str) -> str:
    """Where ``lort compare --protocol`` keeps one (method, seed)."""
    return f"compare/{method}-seed{seed}-protocol-{protocol}.json"


def kept_head(point_name: str) -> str:
    """Where a protocol point keeps the head it chose, beside its result (``lort keep``)."""
    return point_name.removesuffix(".json") + ".head.pt"


def smooth_point(delta: float) -> str:
    """Where ``lort sweep --smooth`` keeps one delta."""
    return f"sweep/smooth-{_float_name(delta)}.json"


def lr_wd_point(method: str, lr: float, wd: float) -> str:
    """Where ``lort sweep --lr/--wd`` keeps one grid cell."""
    return f"sweep/lr-wd-{method}-lr{_float_name(lr)}-wd{_float_name(wd)}.json"


def _float_name(x: float) -> str:
    """A float as it appears in a file name (``repr``: 0.05, 1e-05, 0.0)."""
    return repr(float(x))


@dataclass(frozen=True)
class Point:
    """One stage-2 re-training: a method, a seed, stage-2 optimiser settings, a delta plan."""

    method: Method
    seed: int
    stage2: StageConfig
    smooth: SmoothPlan
    stop: Stop = "last"  # which epoch is kept: the last, or the best on val / on test

    def fingerprint(self, run: FinishedRun) -> dict[str, Any]:
        fp: dict[str, Any] = {
            "version": POINT_VERSION,
            "lort": __version__,
            "run": run.identity,
            "method": self.method.name,
            "seed": self.seed,
            "stage2": dataclasses.asdict(self.stage2),
            "flip_tta": run.problem.flips,
        }
        if self.method.target == "smooth":
            fp["smooth"] = self.smooth.fingerprint()
        if "tau" in self.method.hyper:
            fp["tau"] = run.cfg.tau
        if self.stop != "last":
            fp["stop"] = self.stop
            fp["own"] = {k: list(v) for k, v in own_grids(self.method, run.cfg).items()}
        return fp


def summary(
    a: Analysis, norms: np.ndarray, counts: np.ndarray
) -> dict[str, float | int | list[float | None] | None]:
    """The flat record of one point: accuracies (fractions, class means per group as the
    core reports them), mean L, mean r and mean ||w_c|| overall and per group."""
    out: dict[str, Any] = dict(a.group_accuracies())
    out["balanced_accuracy"] = a.balanced_accuracy
    overall = a.overall_group()
    out["L_all"], out["r_all"] = overall.mean_magnitude, overall.mean_rstd
    out["w_all"] = finite_mean(norms)
    groups = a.groups or {}
    members = shot_groups(counts)
    for name in GROUP_NAMES:
        g = groups.get(name)
        out[f"L_{name}"] = None if g is None else g.mean_magnitude
        out[f"r_{name}"] = None if g is None else g.mean_rstd
        out[f"w_{name}"] = finite_mean(norms[members[name]])
        out[f"classes_{name}"] = int(members[name].size)
    return out


def _choose(run: FinishedRun, point: Point) -> tuple[float, dict[str, Any]]:
    """The point's delta and its record."""
    plan = point.smooth
    return run.problem.choose_smooth(
        point.method,
        "auto" if plan.mode == "select" else plan.delta,
        list(plan.grid) or run.cfg.smooth_grid,
        seed=point.seed,
        stage2=point.stage2,
        stop=point.stop,
    )


def _evaluate(
    run: FinishedRun,
    method: Method,
    seed: int,
    head: nn.Module,
    *,
    stage2: StageConfig | None,
    delta: float,
    selection: dict[str, Any],
    epoch: int,
    stop: str,
    tau: float | None = None,
) -> dict[str, Any]:
    """A trained point on the test split (and the validation split, when there is one),
    exactly as ``lort fit`` evaluates (with the run's tau unless given)."""
    problem = run.problem
    tau = run.problem.tau() if tau is None else tau
    logits = problem.logits(method, head, "test", tau)
    analysis = problem.evaluate(logits)
    bias = curvature(logits)
    val = problem.val_score(method, head, tau) if problem.has_val else ValScore(None, None)
    calibration = problem.calibration(method, head, tau, logits)
    norms = inference_weight_norms(method, head, tau)
    pc = analysis.per_class
    return {
        "method": method.name,
        "seed": seed,
        "stage2": None if stage2 is None else dataclasses.asdict(stage2),
        "delta": delta if method.target == "smooth" else None,
        "smooth": selection,
        "epoch": epoch,
        "stop": stop,
        "val_balanced_accuracy": val.accuracy,
        "val_nll": val.nll,
        "test": summary(analysis, norms, problem.counts)
        | {"lambda_2": bias.lambda_2, "condition": finite_or_none(bias.condition)},
        "calibration": calibration.to_dict(),
        "per_class": {
            "accuracy": jsonable(pc["accuracy"]),
            "magnitude": jsonable(pc["magnitude"]),
            "rstd": jsonable(pc["rstd"]),
            "weight_norm": jsonable(norms),
        },
    }


def _evaluate_point(
    run: FinishedRun,
    point: Point,
    delta: float,
    selection: dict[str, Any],
    head: nn.Module,
    epoch: int | None = None,
    tau: float | None = None,
) -> dict[str, Any]:
    return _evaluate(
        run,
        point.method,
        point.seed,
        head,
        stage2=point.stage2,
        delta=delta,
        selection=selection,
        epoch=point.stage2.epochs if epoch is None else epoch,
        stop=point.stop,
        tau=tau,
    )


def measure(run: FinishedRun, point: Point) -> dict[str, Any]:
    """Re-train ``point`` on the run's cache as ``lort fit`` trains, and evaluate it."""
    delta, selection = _choose(run, point)
    problem = run.problem
    if point.stop == "last":
        head = problem.train(point.method, delta, seed=point.seed, stage2=point.stage2)
        return _evaluate_point(run, point, delta, selection, head)
    on = STOP_SPLIT[point.stop]
    # With the epoch, the method's own hyperparameters are chosen as `lort fit` chooses them.
    own, own_record = problem.choose_own(
        point.method, delta, on, seed=point.seed, stage2=point.stage2
    )
    config = problem.config(point.method, delta, point.seed, point.stage2, own=own)
    (result,) = problem.train_stopped(point.method, [config], on=on)
    assert result.best_head is not None
    head, epoch, tau = result.best_head, result.best_epoch, problem.tau(own)
    record = _evaluate_point(run, point, delta, selection, head, epoch, tau)
    return record | {"hyper": own_record}


@dataclass(frozen=True)
class ProtocolPoint:
    """One (method, seed) of a comparison protocol (:mod:`lort.experiments.protocols`)."""

    name: str
    seed: int
    plan: Plan

    def fingerprint(self, run: FinishedRun) -> dict[str, Any]:
        return {
            "version": POINT_VERSION,
            "lort": __version__,
            "run": run.identity,
            "method": self.name,
            "seed": self.seed,
            "flip_tta": run.problem.flips,
            **self.plan.fingerprint(),
        }


def measure_protocol(
    run: FinishedRun, point: ProtocolPoint
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train the point's candidates, keep the chosen one, and evaluate it on the test split.
    Returns the result and the kept head as :func:`kept_head`'s file holds it."""
    p = point.plan
    chosen = run_plan(run, p)
    hyper = dict(chosen.config.hyper)
    delta = float(hyper.get("smooth", 0.0))
    selection = {"mode": "protocol", "protocol": p.protocol, "delta": delta}
    result = _evaluate(
        run,
        p.method,
        point.seed,
        chosen.head,
        stage2=chosen.config.stage if p.recipe.retrains else None,
        delta=delta,
        selection=selection,
        epoch=chosen.epoch,
        stop=p.protocol,
        tau=hyper.get("tau"),
    )
    curve = chosen.curve
    at_kept = [e["test_accuracy"] for e in curve if e["epoch"] == chosen.epoch]
    if at_kept and not curves_agree(at_kept[0], result["test"]["balanced_accuracy"]):
        # The curve re-trained alone (run_plan) is not the kept head's: no test curve.
        curve = [{**e, "test_accuracy": None} for e in curve]
    result |= {
        "protocol": p.protocol,
        "chosen": {"init": p.recipe.init, "hyper": hyper, "chosen_on": p.choose_on},
        "candidates": chosen.scores,
        "curve": curve,
        "search": {
            "name": p.search,
            "head_epochs": chosen.head_epochs,
            "full_head_epochs": chosen.full_head_epochs,
        },
    }
    head = {
        "head": chosen.head.state_dict(),
        "method": p.method.name,
        "smooth": delta,
        "tau": run.problem.tau() if hyper.get("tau") is None else float(hyper["tau"]),
        "epoch": chosen.epoch,
    }
    return result, head


def stored_result(run: FinishedRun, name: str, fp: dict[str, Any]) -> dict[str, Any] | None:
    """The result stored in RUN/``name`` when it is intact and its fingerprint is ``fp``."""
    if not run.folder.path(name).is_file():
        return None
    try:
        stored = run.folder.read_json(name, POINT_SHAPE)
    except DamagedFileError:  # measured again
        return None
    if isinstance(stored, dict) and stored.get("fingerprint") == fp and "result" in stored:
        return stored["result"]
    return None


def stored_or_measured(
    run: FinishedRun, name: str, point: Point | ProtocolPoint
) -> tuple[dict[str, Any], bool]:
    """The stored result of ``point`` in RUN/``name`` if its fingerprint matches, else a fresh
    measurement, stored there atomically. Returns (result, reused)."""
    fp = point.fingerprint(run)
    stored = stored_result(run, name, fp)
    if stored is not None:
        return stored, True
    if isinstance(point, ProtocolPoint):
        result, head = measure_protocol(run, point)
        run.folder.save_torch(kept_head(name), head)  # before the result that vouches for it
    else:
        result = measure(run, point)
    run.folder.write_json(name, {"fingerprint": fp, "result": result})
    return result, False


def stored_or_measured_together(
    run: FinishedRun, named: list[tuple[str, Point, str]], on_point: OnPoint | None = None
) -> list[tuple[dict[str, Any], bool]]:
    """:func:`stored_or_measured` for (file name, point, label) of one method and stopping rule
    whose delta needs no choosing (fixed or unused), the missing ones trained together in one
    grid (each agrees with its training alone to float rounding). ``on_point(done, total, label,
    reused)`` after each."""
    first = named[0][1]
    if any(
        p.smooth.mode == "select" or p.stop != first.stop or p.method != first.method
        for _, p, _ in named
    ):
        raise ValueError("points measured together are of one method, a given delta, one stop")
    if first.stop != "last" and own_grids(first.method, run.cfg):
        # Each point chooses its own hyperparameters on validation: one grid per point.
        out_each = []
        for i, (name, point, label) in enumerate(named):
            out_each.append(stored_or_measured(run, name, point))
            if on_point is not None:
                on_point(i + 1, len(named), label, out_each[-1][1])
        return out_each
    out: list[tuple[dict[str, Any], bool] | None] = []
    todo = []
    for i, (name, point, label) in enumerate(named):
        stored = stored_result(run, name, point.fingerprint(run))
        out.append(None if stored is None else (stored, True))
        if stored is None:
            todo.append(i)
        elif on_point is not None:
            on_point(i + 1, len(named), label, True)
    if todo:
        method = named[todo[0]][1].method
        chosen = [_choose(run, named[i][1]) for i in todo]
        configs = [
            run.problem.config(method, delta, named[i][1].seed, named[i][1].stage2)
            for i, (delta, _) in zip(todo, chosen, strict=True)
        ]
        if first.stop == "last":
            kept: list[tuple[nn.Module, int | None]] = [
                (head, None) for head in run.problem.train_many(method, configs)
            ]
        else:
            results = run.problem.train_stopped(method, configs, on=STOP_SPLIT[first.stop])
            kept = [(r.best_head, r.best_epoch) for r in results]  # type: ignore[misc]
        for i, (delta, selection), (head, epoch) in zip(todo, chosen, kept, strict=True):
            name, point, label = named[i]
            result = _evaluate_point(run, point, delta, selection, head, epoch)
            run.folder.write_json(name, {"fingerprint": point.fingerprint(run), "result": result})
            out[i] = (result, False)
            if on_point is not None:
                on_point(i + 1, len(named), label, False)
    return [r for r in out if r is not None]
