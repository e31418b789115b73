"""Re-train one stage-2 configuration on a finished ``lort fit`` run's cached features.

``lort compare`` and ``lort sweep`` are built on :func:`load_run` and :func:`retrain`. A point
goes through the very functions ``lort fit`` uses for its own stage 2 (``choose_smooth``,
``train_cached``, ``head_logits``, ``evaluate``), so re-training the run's method with the
run's settings and seed gives the numbers of ``lort fit --resume --out RUN --method M``, bit
for bit. Nothing here touches the backbone: every point is one re-training on the cache (or,
for LORT with ``--smooth auto``, one per delta of the grid plus the final one).

Each point is stored as a JSON file together with a *fingerprint*, a dict of everything that
determines its numbers (the run's stage-1 classifier and data, the method, seed, stage-2
settings, and the delta / tau / flip settings the method reads). A stored point is reused
only when its fingerprint equals the one asked for.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lort import __version__
from lort.analysis import GROUP_NAMES, Analysis, finite_mean, shot_groups
from lort.atomic import atomic_write
from lort.config import FitConfig, StageConfig, load_yaml, resolve
from lort.data import LTData
from lort.errors import InputError
from lort.features import CACHE, FeatureCache
from lort.fit import (
    FROZEN,
    balanced_accuracy,
    choose_smooth,
    evaluate,
    flips_for,
    group_accuracies,
    head_logits,
    load_data,
    train_cached,
)
from lort.methods import CosineHead, LWSHead, Method, tau_normalised_weight
from lort.runfolder import RunFolder
from lort.runtime import Runtime

# What a finished run folder must hold for a re-training.
NEEDED = ("config.yaml", "manifest.json", "stage1.ckpt", CACHE, "report.json")
POINT_VERSION = 1
# The config keys that shape the delta ``lort fit`` picks on the validation split: its report's
# choice stands for the run while these are unchanged.
SELECTION_KEYS = (*FROZEN, "smooth", "smooth_grid", "stage2", "flip_tta")

WEIGHT_NORM_DEFINITION = (
    "mean over the group's classes of ||w_c||, the norm of the class weight vector the head "
    "applies at inference (biases left out): linear heads (lort, ce, balanced-softmax, "
    "cb-resample, focal, cb-loss, maxnorm, logit-adjust) their row W_c (logit adjustment "
    "shifts logits, not weights); tau-norm W_c / ||W_c||^tau; lws scale_c * W_c of the "
    "stage-1 classifier; cosine |s| (the learnt scale on unit-norm weights, features "
    "normalised too); ldam 1 (its normalised layer; the loss's s = 30 is a training-time "
    "scale, not used at inference)"
)


@dataclass
class FinishedRun:
    """A finished ``lort fit`` run: its config, data labels, feature cache and the stage-1
    classifier that every stage-2 head starts from."""

    root: Path
    folder: RunFolder
    cfg: FitConfig
    raw_config: dict[str, Any]
    report: dict[str, Any]
    data: LTData
    cache: FeatureCache
    init: nn.Linear
    counts: np.ndarray
    identity: dict[str, Any]

    @property
    def has_val(self) -> bool:
        return self.data.val_labels is not None and len(self.data.val_labels) > 0

    @property
    def k(self) -> int:
        return self.data.num_classes


def load_run(root: Path) -> FinishedRun:
    """The run in ``root``; InputError saying what to do when it is not a finished run."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            f"{root} is not a run folder (no such directory); make one with `lort fit --out {root}`"
        )
    missing = [n for n in NEEDED if not (root / n).is_file()]
    if missing:
        raise InputError(
            f"{root} is not a finished lort run (no {', '.join(missing)}); run "
            f"`lort fit --out {root}` first (or `lort fit --resume --out {root}` to finish it)"
        )
    folder = RunFolder(root)
    raw = load_yaml(root / "config.yaml")
    cfg = resolve(raw, {})
    try:
        report = folder.read_json("report.json")
        manifest = folder.read_json("manifest.json")
    except (OSError, ValueError) as e:
        raise InputError(f"{root}: cannot read the run's report or manifest: {e}") from None
    data = load_data(cfg)
    for key in ("kept_sha256", "val_sha256", "train_counts", "test_total"):
        if data.manifest.get(key) != manifest.get(key):
            raise InputError(
                f"{root}: the dataset rebuilt from the run's config differs from the one it was "
                f"trained on ({key} changed); its cached features no longer match the labels"
            )
    try:
        cache = FeatureCache.load(str(root / CACHE))
        state = folder.load_torch("stage1.ckpt")["state"]["model"]
        weight, bias = state["head.weight"], state["head.bias"]
    except Exception as e:  # a damaged file: say which
        raise InputError(
            f"{root}: cannot read the feature cache or stage-1 checkpoint: {e}"
        ) from None
    for split, labels in (
        ("train", data.train_labels),
        ("val", data.val_labels),
        ("test", data.test_labels),
    ):
        rows = cache.get(split)
        want = 0 if labels is None else len(labels)
        if (0 if rows is None else len(rows)) != want:
            raise InputError(
                f"{root}: the feature cache holds {0 if rows is None else len(rows)} {split} rows "
                f"but the data has {want}; re-run `lort fit` for this folder"
            )
    init = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        init.weight.copy_(weight)
        init.bias.copy_(bias)
    digest = hashlib.sha256()
    for t in (weight, bias):
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    identity = {
        "stage1_head_sha256": digest.hexdigest(),
        "kept_sha256": manifest.get("kept_sha256"),
        "val_sha256": manifest.get("val_sha256"),
        "cache": {k: list(v.shape) for k, v in sorted(cache.arrays.items())},
    }
    return FinishedRun(
        root=root,
        folder=folder,
        cfg=cfg,
        raw_config=raw,
        report=report,
        data=data,
        cache=cache,
        init=init,
        counts=data.train_counts(),
        identity=identity,
    )


# --------------------------------------------------------------------------------------
# The delta of a smooth-target method.


@dataclass(frozen=True)
class SmoothPlan:
    """``select``: pick delta on the validation split over ``grid`` (as ``--smooth auto``);
    ``fixed``: use ``delta``; ``unused``: one-hot targets."""

    mode: str
    delta: float = 0.0
    grid: tuple[float, ...] = ()
    source: str = ""

    def fingerprint(self) -> dict[str, Any]:
        if self.mode == "select":
            return {"mode": "select-on-val", "grid": list(self.grid)}
        if self.mode == "fixed":
            return {"mode": "fixed", "delta": self.delta}
        return {"mode": "unused"}


def run_delta(run: FinishedRun) -> tuple[float, str] | None:
    """A fixed delta the run itself gives: its config's, or the one ``lort fit`` chose on
    the validation split (when its report is of a smooth-target method and current)."""
    if run.cfg.smooth != "auto":
        return float(run.cfg.smooth), "fixed in the run's config"
    sel = run.report.get("smooth") or {}
    saved = run.report.get("config") or {}
    current = all(saved.get(k) == run.raw_config.get(k) for k in SELECTION_KEYS)
    if sel.get("mode") == "auto" and current:
        return float(sel["delta"]), "the delta `lort fit` chose on the validation split"
    return None


def smooth_plan(run: FinishedRun, method: Method, select_on: str) -> SmoothPlan:
    """What ``lort fit`` would do for ``method``, or with ``select_on="none"`` a fixed delta."""
    if method.target != "smooth":
        return SmoothPlan("unused")
    if run.cfg.smooth != "auto":
        return SmoothPlan("fixed", float(run.cfg.smooth), source="fixed in the run's config")
    if select_on == "val":
        if not run.has_val:
            raise InputError(
                f"{run.root} has no validation split to pick delta on; use --select-on none"
            )
        return SmoothPlan("select", grid=tuple(run.cfg.smooth_grid), source="validation split")
    fixed = run_delta(run)
    if fixed is None:
        instead = "use --select-on val, or" if run.has_val else "the run has no validation split;"
        raise InputError(
            f"{method.name} needs a delta: the run's smooth is 'auto' and its report holds no "
            f"chosen delta; {instead} fix one with "
            f"`lort fit --resume --out {run.root} --smooth DELTA`"
        )
    return SmoothPlan("fixed", fixed[0], source=fixed[1])


# --------------------------------------------------------------------------------------
# One point.


@dataclass(frozen=True)
class Point:
    """One stage-2 re-training: a method, a seed, stage-2 optimiser settings, a delta plan."""

    method: Method
    seed: int
    stage2: StageConfig
    smooth: SmoothPlan

    def fingerprint(self, run: FinishedRun) -> dict[str, Any]:
        fp: dict[str, Any] = {
            "version": POINT_VERSION,
            "lort": __version__,
            "run": run.identity,
            "method": self.method.name,
            "seed": self.seed,
            "stage2": dataclasses.asdict(self.stage2),
            "flip_tta": flips_for(run.cfg),
        }
        if self.method.target == "smooth":
            fp["smooth"] = self.smooth.fingerprint()
        if "tau" in self.method.hyper:
            fp["tau"] = run.cfg.tau
        return fp


@torch.no_grad()
def weight_norms(method: Method, head: nn.Module, tau: float) -> np.ndarray:
    """Per-class norm of the weight vector the head applies at inference (see
    :data:`WEIGHT_NORM_DEFINITION`)."""
    k = int(head.weight.shape[0])
    if method.inference == "tau-norm":
        w = tau_normalised_weight(head.weight, tau)
    elif isinstance(head, CosineHead):
        return np.full(k, abs(float(head.scale)), dtype=np.float64)
    elif isinstance(head, LWSHead):
        w = head.scales[:, None] * head.weight
    else:
        w = head.weight
    return w.detach().double().norm(dim=1).numpy()


def _jsonable(a: np.ndarray) -> list[float | None]:
    return [float(x) if np.isfinite(x) else None for x in np.asarray(a, dtype=np.float64)]


def summary(
    a: Analysis, norms: np.ndarray, counts: np.ndarray
) -> dict[str, float | int | list[float | None] | None]:
    """The flat record of one point: accuracies (fractions, class means per group as the
    core reports them), mean L, mean r and mean ||w_c|| overall and per group."""
    out: dict[str, Any] = dict(group_accuracies(a))
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


def retrain(run: FinishedRun, point: Point) -> dict[str, Any]:
    """Re-train ``point`` on the run's cache and evaluate it on the test split (and the
    validation split, when there is one) exactly as ``lort fit`` does."""
    cfg = dataclasses.replace(
        run.cfg,
        method=point.method.name,
        seed=point.seed,
        stage2=point.stage2,
        smooth="auto" if point.smooth.mode == "select" else point.smooth.delta,
        smooth_grid=list(point.smooth.grid) or run.cfg.smooth_grid,
    )
    method = point.method
    delta, selection = choose_smooth(cfg, method, run.cache, run.data, run.init, run.counts)
    head = train_cached(cfg, method, run.cache, run.data, run.init, run.counts, delta)
    logits = head_logits(cfg, method, head, run.cache, run.counts, "test")
    analysis = evaluate(Runtime(torch.device("cpu")), logits, run.data.test_labels, run.counts)
    val = None
    if run.has_val:
        assert run.data.val_labels is not None
        val_logits = head_logits(cfg, method, head, run.cache, run.counts, "val")
        val = balanced_accuracy(val_logits, run.data.val_labels, run.k)
    norms = weight_norms(method, head, cfg.tau)
    pc = analysis.per_class
    return {
        "method": method.name,
        "seed": point.seed,
        "stage2": dataclasses.asdict(point.stage2),
        "delta": delta if method.target == "smooth" else None,
        "smooth": selection,
        "val_balanced_accuracy": val,
        "test": summary(analysis, norms, run.counts),
        "per_class": {
            "accuracy": _jsonable(pc["accuracy"]),
            "magnitude": _jsonable(pc["magnitude"]),
            "rstd": _jsonable(pc["rstd"]),
            "weight_norm": _jsonable(norms),
        },
    }


def cached_point(run: FinishedRun, name: str, point: Point) -> tuple[dict[str, Any], bool]:
    """The stored result of ``point`` in RUN/``name`` if its fingerprint matches, else a fresh
    re-training, stored there atomically. Returns (result, reused)."""
    fp = point.fingerprint(run)
    path = run.folder.path(name)
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = None
        if isinstance(stored, dict) and stored.get("fingerprint") == fp and "result" in stored:
            return stored["result"], True
    result = retrain(run, point)
    run.folder.write_json(name, {"fingerprint": fp, "result": result})
    return result, False


def float_name(x: float) -> str:
    """A float as it appears in a file name (``repr``: 0.05, 1e-05, 0.0)."""
    return repr(float(x))


# --------------------------------------------------------------------------------------
# Writing tables.


def write_csv(folder: RunFolder, name: str, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else v for v in row])
    text = buf.getvalue()
    atomic_write(folder.path(name), lambda f: f.write(text.encode()))


OnPoint = Callable[[int, int, str, bool], None]
"""on_point(done, total, label, reused) after every point."""
