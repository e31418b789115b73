"""``lort fit``: data -> stage 1 -> feature cache -> stage 2 -> evaluation -> report.

Stage 1 and the feature cache are checkpointed phases (``--resume`` skips what
is done and continues stage 1 from its last epoch); stage 2 and the evaluation
are seconds on a cache and are recomputed, deterministically for the seed."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lort import _core, runtime
from lort.analysis import Analysis, summarize
from lort.config import FitConfig
from lort.data import LTData, build_dataset
from lort.errors import InputError
from lort.features import CACHE, FeatureCache, build_cache
from lort.methods import Method, get_method, inference_logits, rho
from lort.models import build_model
from lort.runfolder import RunFolder
from lort.train import Progress, Stage1State, train_head_cached, train_head_live, train_stage1

AUTO_VAL_FRACTION = 0.2
LOW_RHO = 1.5
# Re-trained on the same cached features next to every run, for comparison.
BASELINES = ("ce", "logit-adjust")


@dataclass
class FitOptions:
    out: Path
    resume: bool = False
    overwrite: bool = False
    dry_run: bool = False
    stop_after: str | None = None  # "stage1"


@dataclass
class FitResult:
    folder: Path
    analysis: Analysis | None
    report: dict[str, Any] = field(default_factory=dict)


Say = Callable[[str], None]


def flips_for(cfg: FitConfig) -> bool:
    """Mirror images are no augmentation for digits (a mirrored 2 is no 2)."""
    return cfg.flip_tta and cfg.dataset != "digits-lt"


def load_data(cfg: FitConfig) -> LTData:
    return build_dataset(
        cfg.dataset,
        data_root=cfg.data_root,
        imbalance_ratio=cfg.imbalance_ratio,
        lt_split=cfg.lt_split,  # type: ignore[arg-type]
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        download=cfg.download,
    )


def plan_lines(cfg: FitConfig, data: LTData, method: Method, folder: Path) -> list[str]:
    counts = data.train_counts()
    s1, s2 = cfg.stage1, cfg.stage2
    assert s1 is not None and s2 is not None
    val = 0 if data.val_labels is None else len(data.val_labels)
    return [
        f"run folder   {folder}",
        f"data         {cfg.dataset}: {data.num_classes} classes, {int(counts.sum()):,} train "
        f"(max {counts.max()}, min {counts.min()}), {val:,} val, {len(data.test_labels):,} test",
        f"stage 1      {cfg.arch}, loss {cfg.stage1_loss}, {s1.epochs} epochs, lr {s1.lr}, "
        f"wd {s1.weight_decay}, batch {s1.batch_size}",
        f"stage 2      {method.name} ({cfg.stage2_mode}), smooth {cfg.smooth}, {s2.epochs} epochs, "
        f"lr {s2.lr}, wd {s2.weight_decay}, batch {s2.batch_size}",
        f"evaluation   flip TTA {'on' if flips_for(cfg) else 'off'}",
    ]


def fit(cfg: FitConfig, opts: FitOptions, say: Say, progress: Progress) -> FitResult:
    rt = runtime.start(cfg.device)
    try:
        return _fit(cfg, opts, rt, say if rt.is_main else (lambda _: None), progress)
    finally:
        runtime.stop(rt)


def _fit(
    cfg: FitConfig, opts: FitOptions, rt: runtime.Runtime, say: Say, progress: Progress
) -> FitResult:
    notes: list[str] = []
    method = get_method(cfg.method)
    if cfg.smooth == "auto" and method.target == "smooth" and cfg.val_fraction == 0.0:
        cfg.val_fraction = AUTO_VAL_FRACTION
        notes.append(
            f"--smooth auto picks delta on a validation split: carved {AUTO_VAL_FRACTION:.0%} "
            "of the training data (stratified), since none was asked for"
        )
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = load_data(cfg)
    k = data.num_classes
    if cfg.smooth != "auto" and method.target == "smooth":
        r = rho(k, float(cfg.smooth))
        if r < LOW_RHO:
            notes.append(
                f"delta {cfg.smooth} with K={k} leaves a true/other target ratio rho = "
                f"1 + K(1-delta)/delta = {r:.2f} < {LOW_RHO}: the target barely prefers the true "
                "class; the paper's delta 0.98 assumes K >= 100. Consider --smooth auto."
            )
    folder = _open_folder(opts, rt)
    for n in notes:
        say(f"[yellow]note:[/yellow] {n}")
    if rt.is_main:
        folder.write_yaml("config.yaml", cfg.to_dict())
        folder.write_json("manifest.json", data.manifest)
    for line in plan_lines(cfg, data, method, folder.root):
        say(line)
    if opts.dry_run:
        say("dry run: datasets built and manifest written; nothing trained")
        return FitResult(folder.root, None)

    timings: dict[str, float] = {}
    model = build_model(cfg.arch or "", k, data.in_channels)
    counts = data.train_counts()

    t = time.perf_counter()
    images = _stage1(cfg, opts, rt, folder, data, model, counts, progress)
    timings["stage1_s"] = time.perf_counter() - t
    if images:
        timings["stage1_images_per_s"] = images * rt.world / timings["stage1_s"]
    if opts.stop_after == "stage1":
        say(f"stopped after stage 1; continue with: lort fit --resume --out {folder.root}")
        return FitResult(folder.root, None)

    t = time.perf_counter()
    cache = _features(cfg, rt, folder, data, model)
    timings["features_s"] = time.perf_counter() - t

    t = time.perf_counter()
    smooth, selection = choose_smooth(cfg, method, cache, data, model.head, counts)
    head = _stage2(cfg, rt, method, cache, data, model, counts, smooth, progress)
    timings["stage2_s"] = time.perf_counter() - t

    baselines = _baselines(cfg, method, cache, data, model.head, counts) if rt.is_main else {}
    t = time.perf_counter()
    if cfg.stage2_mode == "live" and cfg.live_bn == "train":
        cache = build_cache(
            model.backbone, _eval_sets(data, ("test",), rt), rt, flip=flips_for(cfg)
        )
    logits = head_logits(cfg, method, head, cache, counts, "test")
    analysis = evaluate(rt, logits, data.test_labels, counts)
    timings["eval_s"] = time.perf_counter() - t
    if not rt.is_main:
        return FitResult(folder.root, None)

    folder.write_npy("logits.npy", logits.astype(np.float32))
    folder.write_npy("labels.npy", data.test_labels.astype(np.int64))
    folder.write_npy("train_counts.npy", counts.astype(np.int64))
    folder.save_torch(
        "stage2.pt", {"head": head.state_dict(), "method": method.name, "smooth": smooth}
    )
    report = {
        "config": cfg.to_dict(),
        "manifest": data.manifest,
        "method": dataclasses.asdict(method),
        "smooth": selection,
        "flip_tta": flips_for(cfg),
        "notes": notes,
        "baselines": baselines,
        "results": analysis.to_dict(),
        "timings": timings,
        "runtime": rt.describe(),
        "files": [
            "config.yaml",
            "manifest.json",
            "stage1.ckpt",
            CACHE,
            "stage2.pt",
            "logits.npy",
            "labels.npy",
            "train_counts.npy",
            "report.json",
        ],
    }
    report["baselines"]["method"] |= group_accuracies(analysis)
    folder.write_json("report.json", report)
    return FitResult(folder.root, analysis, report)


# Options that shape stage 1 and the feature cache: a resumed run must keep them.
FROZEN = (
    "dataset",
    "data_root",
    "imbalance_ratio",
    "lt_split",
    "val_fraction",
    "seed",
    "arch",
    "stage1_loss",
    "stage1",
)


def check_unchanged(saved: dict[str, Any], now: dict[str, Any]) -> None:
    changed = [k for k in FROZEN if saved.get(k) != now.get(k)]
    if changed:
        what = "; ".join(f"{k}: run has {saved.get(k)!r}, asked {now.get(k)!r}" for k in changed)
        raise InputError(
            f"--resume cannot change what stage 1 was trained with ({what}); drop those "
            "options, or start a new run with another --out"
        )


def _open_folder(opts: FitOptions, rt: runtime.Runtime) -> RunFolder:
    if rt.is_main:
        folder = RunFolder.open(opts.out, resume=opts.resume, overwrite=opts.overwrite)
    if rt.distributed:
        dist.barrier()
    if not rt.is_main:
        folder = RunFolder(opts.out)
    return folder


def _stage1(
    cfg: FitConfig,
    opts: FitOptions,
    rt: runtime.Runtime,
    folder: RunFolder,
    data: LTData,
    model: nn.Module,
    counts: np.ndarray,
    progress: Progress,
) -> int:
    """Train (or finish) stage 1; returns the number of images this rank trained on now."""
    ckpt = folder.path("stage1.ckpt")
    resume = None
    if ckpt.exists():
        saved = folder.load_torch("stage1.ckpt")
        check_unchanged(saved["config"], cfg.to_dict())
        resume = Stage1State(**saved["state"])
    if folder.done("stage1") and resume is not None:
        model.load_state_dict(resume.model)
        return 0

    def checkpoint(state: Stage1State) -> None:
        if rt.is_main:
            folder.save_torch(
                "stage1.ckpt", {"state": dataclasses.asdict(state), "config": cfg.to_dict()}
            )

    assert cfg.stage1 is not None
    in_memory = data.tensor_images("train", rt.device)
    images = train_stage1(
        model,
        data.dataset("train", augment=True) if in_memory is None else in_memory,
        counts,
        cfg.stage1,
        cfg.stage1_loss,
        rt,
        seed=cfg.seed,
        workers=cfg.workers,
        resume=resume,
        checkpoint=checkpoint,
        progress=progress,
        compile_model=cfg.compile_model,
    )
    model.cpu()
    if rt.is_main:
        folder.mark_done("stage1")
    if rt.distributed:
        dist.barrier()
    return images


def _eval_sets(data: LTData, splits: tuple[str, ...], rt: runtime.Runtime) -> dict[str, Any]:
    """The unaugmented splits: decoded once onto the device where that applies."""
    present = {"train": True, "val": data.val_labels is not None, "test": True}
    sets: dict[str, Any] = {}
    for s in (s for s in splits if present[s]):
        decoded = data.tensor_images(s, rt.device)  # type: ignore[arg-type]
        sets[s] = data.dataset(s, augment=False) if decoded is None else decoded  # type: ignore[arg-type]
    return sets


def _features(
    cfg: FitConfig, rt: runtime.Runtime, folder: RunFolder, data: LTData, model: nn.Module
) -> FeatureCache:
    if folder.done("features"):
        return FeatureCache.load(str(folder.path(CACHE)))
    if rt.is_main:
        cache = build_cache(
            model.backbone, _eval_sets(data, ("train", "val", "test"), rt), rt, flip=flips_for(cfg)
        )
        folder.write_npz(CACHE, **cache.arrays)
        folder.mark_done("features")
    if rt.distributed:
        dist.barrier()
    return FeatureCache.load(str(folder.path(CACHE)))


def _finite(x: float) -> float | None:
    """JSON has no infinity (rho is infinite at delta = 0)."""
    return x if np.isfinite(x) else None


def balanced_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    pred = logits.argmax(1)
    accs = [float((pred[labels == c] == c).mean()) for c in range(k) if (labels == c).any()]
    return float(np.mean(accs))


def choose_smooth(
    cfg: FitConfig,
    method: Method,
    cache: FeatureCache,
    data: LTData,
    init: nn.Linear,
    counts: np.ndarray,
) -> tuple[float, dict[str, Any]]:
    """The label-smooth delta: fixed, or picked on the validation split (never the test set)."""
    k = data.num_classes
    if method.target != "smooth":
        return 0.0, {"mode": "unused", "why": f"{method.name} trains on one-hot targets"}
    if cfg.smooth != "auto":
        d = float(cfg.smooth)
        return d, {"mode": "fixed", "delta": d, "rho": _finite(rho(k, d))}
    assert cfg.stage2 is not None and data.val_labels is not None
    scores = []
    for d in cfg.smooth_grid:
        head = train_cached(cfg, method, cache, data, init, counts, d)
        val_logits = head_logits(cfg, method, head, cache, counts, "val")
        scores.append(balanced_accuracy(val_logits, data.val_labels, k))
    best = int(np.argmax(scores))
    d = cfg.smooth_grid[best]
    return d, {
        "mode": "auto",
        "grid": cfg.smooth_grid,
        "val_balanced_accuracy": scores,
        "delta": d,
        "rho": _finite(rho(k, d)),
        "why": f"highest class-mean accuracy on the validation split "
        f"({len(data.val_labels):,} images) among {len(scores)} values of delta",
    }


def train_cached(
    cfg: FitConfig,
    method: Method,
    cache: FeatureCache,
    data: LTData,
    init: nn.Linear,
    counts: np.ndarray,
    smooth: float,
    progress: Progress | None = None,
) -> nn.Module:
    assert cfg.stage2 is not None
    feats = cache.tensor("train")
    assert feats is not None
    return train_head_cached(
        method,
        feats,
        cache.tensor("train", flipped=True),
        torch.from_numpy(data.train_labels),
        counts,
        init,
        cfg.stage2,
        smooth=smooth,
        seed=cfg.seed,
        progress=progress,
    )


def _stage2(
    cfg: FitConfig,
    rt: runtime.Runtime,
    method: Method,
    cache: FeatureCache,
    data: LTData,
    model: nn.Module,
    counts: np.ndarray,
    smooth: float,
    progress: Progress,
) -> nn.Module:
    if cfg.stage2_mode == "cached":
        return train_cached(cfg, method, cache, data, model.head, counts, smooth, progress)
    assert cfg.stage2 is not None
    return train_head_live(
        method,
        model,
        data.dataset("train", augment=True),
        data.train_labels,
        counts,
        cfg.stage2,
        rt,
        smooth=smooth,
        bn=cfg.live_bn,
        seed=cfg.seed,
        workers=cfg.workers,
        progress=progress,
    ).cpu()


@torch.no_grad()
def head_logits(
    cfg: FitConfig,
    method: Method,
    head: nn.Module,
    cache: FeatureCache,
    counts: np.ndarray,
    split: str,
) -> np.ndarray:
    head = head.cpu().eval()
    feats = cache.tensor(split)
    assert feats is not None
    z = inference_logits(method, head, feats, counts, tau=cfg.tau)
    flipped = cache.tensor(split, flipped=True)
    if flips_for(cfg) and flipped is not None:
        z = (z + inference_logits(method, head, flipped, counts, tau=cfg.tau)) / 2
    return z.float().numpy()


def group_accuracies(a: Analysis) -> dict[str, float | None]:
    groups = a.groups or {}
    return {"all": a.accuracy} | {
        name: (None if g is None else g.accuracy) for name, g in groups.items()
    }


def _baselines(
    cfg: FitConfig,
    method: Method,
    cache: FeatureCache,
    data: LTData,
    init: nn.Linear,
    counts: np.ndarray,
) -> dict[str, Any]:
    """Test accuracy of plain CE re-training and post-hoc logit adjustment on the
    same cached features and seed: the yardstick for the chosen method."""
    out: dict[str, Any] = {"method": {"name": method.name}}
    for name in BASELINES:
        if name == method.name:
            continue
        other = get_method(name)
        head = train_cached(cfg, other, cache, data, init, counts, 0.0)
        z = head_logits(cfg, other, head, cache, counts, "test")
        stats = _core.LogitStats(z.shape[1], hessian="none")
        stats.update(z, data.test_labels)
        out[name] = group_accuracies(summarize(stats, train_counts=counts))
    return out


def evaluate(
    rt: runtime.Runtime, logits: np.ndarray, labels: np.ndarray, counts: np.ndarray
) -> Analysis:
    """Statistics of the test logits; under DDP each rank takes a shard and the
    accumulators merge exactly on every rank."""
    stats = _core.LogitStats(logits.shape[1])
    rows = slice(rt.rank, None, rt.world)
    stats.update(np.ascontiguousarray(logits[rows]), np.ascontiguousarray(labels[rows]))
    if rt.distributed:
        shards: list[Any] = [None] * rt.world
        dist.all_gather_object(shards, stats)
        stats = shards[0]
        for other in shards[1:]:
            stats.merge(other)
    return summarize(stats, train_counts=counts)
