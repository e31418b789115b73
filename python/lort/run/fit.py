"""``lort fit``: data -> stage 1 -> feature cache -> stage 2 -> evaluation -> report.

Stage 1 and the feature cache are checkpointed phases (``--resume`` skips what
is done and continues stage 1 from its last epoch); stage 2 and the evaluation
are seconds on a cache and are recomputed, deterministically for the seed."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from lort import runtime
from lort.analysis import Analysis
from lort.config import FitConfig, resolve, validate_for_fit
from lort.data import LTData
from lort.errors import DamagedFileError, InputError, LortError, OptionError
from lort.methods import Method, get_method, rho
from lort.models import Classifier, build_model, classifier_head, load_backbone_weights
from lort.options import AUTO_METHOD, auto_needs_validation
from lort.run.feature_cache import open_cache, save_extracted, save_given
from lort.run.folder import (
    CONFIG,
    HISTORY,
    MANIFEST,
    REPORT,
    RUN_FILES,
    SPLIT_LABELS,
    STAGE1,
    RunFolder,
    check_for_fit,
    check_manifest,
    check_out,
    check_resume,
    open_for_fit,
    resume_values,
)
from lort.runtime import Progress
from lort.stage1.features import FeatureCache, build_cache
from lort.stage1.loop import Stage1State, train_stage1
from lort.stage1.losses import checkpoint_head, stage1_head, stage1_init
from lort.stage2.grid import EpochScores
from lort.stage2.loop import train_head_cached, train_head_live
from lort.stage2.problem import Stage2, load_data

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
    threads: int | None = None  # torch's intra-op threads (see runtime.set_threads)
    figures: bool = True  # the reliability diagram (LortClassifier draws none)
    auto: bool = False  # --method auto: a comparison chooses the method on validation after it


@dataclass
class FitResult:
    folder: Path
    analysis: Analysis | None
    report: dict[str, Any] = field(default_factory=dict)  # what report.json holds


Say = Callable[[str], None]


def _noting(say: Say) -> Callable[[str], None]:
    return lambda n: say(f"note: {n}")


def plan_lines(cfg: FitConfig, data: LTData, method: Method, folder: Path) -> list[str]:
    counts = data.train_counts()
    s2 = cfg.stage2
    val = 0 if data.val_labels is None else len(data.val_labels)
    flips = cfg.flip_tta and data.mirrorable
    spec = data.transform_spec
    lines = [
        f"run folder   {folder}",
        f"data         {cfg.dataset}: {data.num_classes} classes, {int(counts.sum()):,} train "
        f"(max {counts.max()}, min {counts.min()}), {val:,} val, {len(data.test_labels):,} test",
        f"validation   {data.manifest.get('val_rule', 'none')}",
        _stage1_line(cfg, data),
    ]
    if spec.kind == "resized":
        lines.append(
            f"input        {spec.image_size}px (resize {spec.resize}, {spec.interpolation}), "
            f"mean {spec.mean}, std {spec.std}: the network's pretrained config"
        )
    return [
        *lines,
        f"stage 2      {method.name} ({cfg.stage2_mode}), smooth {cfg.smooth}, {s2.epochs} epochs, "
        f"lr {s2.lr}, wd {s2.weight_decay}, batch {s2.batch_size}",
        f"evaluation   flip TTA {'on' if flips else 'off'}",
        f"threads      {runtime.threads_line()}",
    ]


def _stage1_line(cfg: FitConfig, data: LTData) -> str:
    s1 = cfg.stage1
    schedule = f"{s1.epochs} epochs, lr {s1.lr}, wd {s1.weight_decay}, batch {s1.batch_size}"
    if cfg.dataset == "features":
        what = f"no backbone: {data.manifest.get('feature_dim')}-d features from {cfg.data_root}"
        if s1.epochs == 0:
            return f"stage 1      {what}; stage 2 starts from a fresh linear head"
        return f"stage 1      {what}; a linear head trained with ce, {schedule}"
    start = (
        "pretrained weights"
        if cfg.pretrained
        else f"weights {cfg.weights}"
        if cfg.weights
        else "random init"
    )
    if s1.epochs == 0:
        return f"stage 1      {cfg.arch} ({start}), linear probing: no training, a fresh head"
    tuning = (
        ", backbone frozen"
        if cfg.freeze_backbone
        else f", backbone lr x {cfg.backbone_lr_scale}"
        if cfg.backbone_lr_scale != 1.0
        else ""
    )
    if cfg.stage1_schedule == "ldam-drw":
        schedule += ", LDAM-DRW's schedule (5 warm-up epochs, step decay)"
    return f"stage 1      {cfg.arch} ({start}{tuning}), loss {cfg.stage1_loss}, {schedule}"


def fit_config(
    out: Path, file_values: dict[str, Any], options: dict[str, Any], *, resume: bool, source: str
) -> tuple[FitConfig, bool]:
    """The resolved config of ``lort fit --out OUT`` from a config file's values and the
    options (flags) over them, a resumed run's saved config under both; and whether the method
    is ``auto`` (:data:`lort.options.AUTO_METHOD`: the run trains LORT, then the tuned
    comparison keeps the best on validation, :func:`lort.experiments.keep.compare_and_keep`)."""
    if resume:
        file_values = resume_values(out, file_values)
    auto = (options.get("method") or file_values.get("method")) == AUTO_METHOD
    if auto:
        options = {**options, "method": None}
        file_values = {k: v for k, v in file_values.items() if k != "method"}
    cfg = resolve(file_values, options, source)
    validate_for_fit(cfg)
    return cfg, auto


def fit(cfg: FitConfig, opts: FitOptions, say: Say, progress: Progress) -> FitResult:
    runtime.set_threads(opts.threads)
    rt = runtime.start(cfg.device)
    try:
        result = _fit(cfg, opts, rt, say if rt.is_main else (lambda _: None), progress)
    except BaseException:
        runtime.stop(rt, together=False)
        raise
    runtime.stop(rt)
    return result


def _fit(
    cfg: FitConfig, opts: FitOptions, rt: runtime.Runtime, say: Say, progress: Progress
) -> FitResult:
    notes = list(cfg.notes)
    method = get_method(cfg.method)
    weights = None if cfg.weights is None else Path(cfg.weights).expanduser()
    if weights is not None and not weights.is_file() and not (opts.out / STAGE1).exists():
        raise InputError(f"--weights {cfg.weights}: no such file")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if opts.dry_run and cfg.download:  # a dry run writes nothing: no download, no data folder
        try:
            data = load_data(dataclasses.replace(cfg, download=False))
        except LortError as e:
            say(
                f"dry run: the data is not readable yet ({e}); without --dry-run, --download "
                f"fetches {cfg.dataset} into {cfg.data_root} first. Nothing written, nothing "
                "fetched"
            )
            return FitResult(opts.out, None)
    else:
        data = load_data(cfg)
    data.check_images()
    _import_what_the_run_uses(cfg, data)
    no_val = data.val_labels is None or len(data.val_labels) == 0
    if opts.auto and no_val:  # said before anything trains
        raise auto_needs_validation()
    if cfg.stage2_stop == "val" and no_val:
        raise OptionError(
            "{stage2_stop} val keeps the best validation epoch: give the run a validation "
            "split ({val_split}, or {val_fraction} > 0), or use {stage2_stop} last",
            "stage2_stop",
            "val_split",
            "val_fraction",
        )
    k = data.num_classes
    if cfg.smooth != "auto" and method.target == "smooth":
        r = rho(k, float(cfg.smooth))
        if r < LOW_RHO:
            notes.append(
                f"delta {cfg.smooth} with K={k} leaves a true/other target ratio rho = "
                f"1 + K(1-delta)/delta = {r:.2f} < {LOW_RHO}: the target barely prefers the true "
                "class; the paper's delta 0.98 assumes K >= 100. Consider --smooth auto."
            )
    if cfg.stage1.epochs == 0 and (method.target == "smooth" or method.head == "lws"):
        notes.append(
            f"--epochs1 0: {method.name} re-trains the stage-1 classifier, and stage 1 leaves a "
            "fresh one; to train it first, use --freeze-backbone with --epochs1 N (images) or "
            "the default --epochs1 (features)"
        )
    if opts.resume:
        check_resume(opts.out, cfg.to_dict())
        check_manifest(opts.out, data.manifest)
    # The network is built and its weights loaded before the run folder is touched, so that a
    # failed download or a weights file that does not fit leaves nothing behind.
    model = None if cfg.dataset == "features" else _start_model(cfg, opts, data, say)
    if opts.dry_run:  # what the run would do, and whether it could: nothing is written
        check_out(opts.out)
        check_for_fit(opts.out, resume=opts.resume, overwrite=opts.overwrite)
        for n in notes:
            _noting(say)(n)
        for line in plan_lines(cfg, data, method, opts.out):
            say(line)
        say("dry run: the data built and every option checked; nothing written, nothing trained")
        return FitResult(opts.out, None)
    # Everything is checked: from here on the run folder is written, by rank 0 alone.
    with ExitStack() as stack:
        if rt.is_main:
            folder = stack.enter_context(
                open_for_fit(
                    opts.out, resume=opts.resume, overwrite=opts.overwrite, note=_noting(say)
                )
            )
        if rt.distributed:
            dist.barrier()
        if not rt.is_main:
            folder = RunFolder(opts.out)
        return _run(cfg, opts, rt, folder, data, model, method, notes, say, progress)


def _import_what_the_run_uses(cfg: FitConfig, data: LTData) -> None:
    """Import now the optional packages the run uses only later (torchvision's transforms for
    images, matplotlib for the reliability diagram of a run with a validation split), so that
    one not installed is an ImportError (one line at the command) before anything is
    written, not after stage 1."""
    import importlib

    if cfg.dataset != "features":
        importlib.import_module("torchvision.transforms")
    if data.val_labels is not None and len(data.val_labels):
        importlib.import_module("matplotlib.figure")


def _run(
    cfg: FitConfig,
    opts: FitOptions,
    rt: runtime.Runtime,
    folder: RunFolder,
    data: LTData,
    model: Classifier | None,
    method: Method,
    notes: list[str],
    say: Say,
    progress: Progress,
) -> FitResult:
    for n in notes:
        _noting(say)(n)
    if rt.is_main:
        # A resumed run keeps the manifest stage 1 was trained on (checked again, locked).
        has_manifest = opts.resume and check_manifest(folder.root, data.manifest)
        folder.write_yaml(CONFIG, cfg.to_dict())
        if not has_manifest:
            folder.write_json(MANIFEST, data.manifest)
    for line in plan_lines(cfg, data, method, folder.root):
        say(line)

    timings: dict[str, float] = {}
    counts = data.train_counts()
    stage1_history: list[dict[str, float]] = []  # a features run's linear stage 1 keeps none
    if cfg.dataset == "features":
        t = time.perf_counter()
        cache = _given_features(rt, folder, data, cfg, say)
        timings["features_s"] = time.perf_counter() - t
        t = time.perf_counter()
        init = _linear_stage1(cfg, rt, folder, data, cache, counts, progress)
        timings["stage1_s"] = time.perf_counter() - t
    else:
        assert model is not None
        t = time.perf_counter()
        images, stage1_history = _stage1(cfg, opts, rt, folder, data, model, counts, progress, say)
        timings["stage1_s"] = time.perf_counter() - t
        if images:
            timings["stage1_images_per_s"] = images * rt.world / timings["stage1_s"]
    if opts.stop_after == "stage1":
        say(f"stopped after stage 1; continue with: lort fit --resume --out {folder.root}")
        return FitResult(folder.root, None)

    if model is not None:
        t = time.perf_counter()
        cache = _features(rt, folder, data, model, cfg, say)
        timings["features_s"] = time.perf_counter() - t
        init = stage1_init(model.head.state_dict(), prefix="")
    if rt.is_main:
        _split_labels(folder, data, say)
    problem = Stage2(cfg, data, cache, init, counts)

    t = time.perf_counter()
    cached = model is None or cfg.stage2_mode == "cached"
    stop = problem.stop() if cached else "last"
    smooth, selection = problem.choose_smooth(
        method,
        cfg.smooth,
        cfg.smooth_grid,
        stop=stop,
        progress=lambda _, *rest: progress("delta grid", *rest),
    )
    if selection.get("mode") == "auto" and smooth == 0.0:
        notes.append(
            f"delta 0 was chosen on the validation split, so {method.name}'s target is one-hot "
            "here: its result is plain cross-entropy re-training (see the delta grid's scores "
            "in report.json)"
        )
        _noting(say)(notes[-1])
    own, own_record = problem.choose_own(method, smooth, "val" if stop == "val" else None)
    stage2_history: list[EpochScores] = []
    if cached:
        head, epoch, stage2_history = problem.train_kept(method, smooth, stop, own, progress)
    else:
        head = _stage2_live(cfg, rt, method, data, model, counts, smooth, progress)
        epoch = cfg.stage2.epochs
    timings["stage2_s"] = time.perf_counter() - t
    kept = {
        "epoch": epoch,
        "of": cfg.stage2.epochs,
        "rule": "best class-mean accuracy on the validation split (then NLL, then the earliest)"
        if stop == "val"
        else "the last epoch",
    }

    t = time.perf_counter()
    baselines: dict[str, Any] = {"method": {"name": method.name}}
    if rt.is_main and cfg.baselines:
        baselines = _baselines(problem, method, stop, progress)
        timings["baselines_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if model is not None and cfg.stage2_mode == "live" and cfg.live_bn == "train":
        # BatchNorm statistics moved in stage 2: the features evaluated (the test split, and
        # the validation split the temperature is fitted on) must be taken again.
        splits = ("val", "test") if data.val_labels is not None else ("test",)
        sets = _eval_sets(data, splits, rt)
        problem.cache = build_cache(model.backbone, sets, rt, flip=problem.flips)
    tau = problem.tau(own)
    logits = problem.logits(method, head, "test", tau)
    analysis = problem.evaluate(logits, rt=rt)
    timings["eval_s"] = time.perf_counter() - t
    if not rt.is_main:
        return FitResult(folder.root, None)

    t = time.perf_counter()
    calibration = problem.calibration(method, head, tau, logits)
    timings["calibration_s"] = time.perf_counter() - t

    report = {
        "config": cfg.to_dict(),
        "manifest": data.manifest,
        "method": dataclasses.asdict(method),
        "smooth": selection,
        "hyper": own_record,
        "stage2_epoch": kept,
        "flip_tta": problem.flips,
        "input": dataclasses.asdict(data.transform_spec),
        "notes": notes,
        "baselines": baselines,
        "results": analysis.to_dict(),
        "calibration": calibration.to_dict(),
        "timings": timings,
        "runtime": rt.describe(),
        "files": list(RUN_FILES),
    }
    report["baselines"]["method"] |= analysis.group_accuracies()
    with folder.stage2_outputs():  # all of them, or readers refuse every one
        folder.write_csv(HISTORY, *history_table(stage1_history, stage2_history))
        folder.write_npy("logits.npy", logits.astype(np.float32))
        folder.write_npy("labels.npy", data.test_labels.astype(np.int64))
        folder.write_npy("train_counts.npy", counts.astype(np.int64))
        folder.save_torch(
            "stage2.pt",
            {
                "head": head.state_dict(),
                "method": method.name,
                "smooth": smooth,
                "tau": tau,
                "temperature": calibration.temperature,
            },
        )
        if calibration.temperature is not None and opts.figures:
            from lort.plots import plot_calibration

            plot_calibration(
                logits,
                data.test_labels,
                calibration,
                folder.inside("figures/reliability.png"),
                f"{folder.root}: {method.name}, test split",
            )
        folder.write_json(REPORT, report)
    if cfg.log == "tensorboard":
        from lort.run.tensorboard import write_tensorboard

        path = write_tensorboard(folder, *history_table(stage1_history, stage2_history))
        say(f"TensorBoard: {path} (tensorboard --logdir {path.parent})")
    return FitResult(folder.root, analysis, report)


HISTORY_HEADER = ("stage", "epoch", "train_loss", "train_accuracy", "lr", "val_accuracy", "val_nll")


def history_table(
    stage1: list[dict[str, float]], stage2: list[EpochScores]
) -> tuple[list[str], list[list[Any]]]:
    """``history.csv``: a row per stage-1 epoch (mean training loss and accuracy of its batches,
    the learning rate it ended at) and per stage-2 epoch of the kept configuration (class-mean
    accuracy and NLL on the validation split, when it chose the epoch there)."""
    rows: list[list[Any]] = [
        ["stage1", r["epoch"], r["loss"], r["accuracy"], r["lr"], None, None] for r in stage1
    ]
    rows += [["stage2", e.epoch, None, None, None, e.val_accuracy, e.val_nll] for e in stage2]
    return list(HISTORY_HEADER), rows


def _start_model(cfg: FitConfig, opts: FitOptions, data: LTData, say: Say) -> Classifier:
    """The network stage 1 starts from: pretrained or loaded from --weights unless the run
    folder already holds a stage-1 checkpoint to continue (which replaces those weights)."""
    fresh = opts.overwrite or not (opts.out / STAGE1).exists()
    model = build_model(
        cfg.arch,
        data.num_classes,
        data.in_channels,
        pretrained=cfg.pretrained and fresh,
        head=stage1_head(cfg.stage1_loss),
    )
    if cfg.weights is not None and fresh:
        ignored = load_backbone_weights(model.backbone, cfg.weights)
        say(
            f"loaded --weights {cfg.weights} into the backbone"
            + (f"; ignored its {', '.join(ignored)}" if ignored else "")
        )
    return model


def _resumed(folder: RunFolder, epoch: int, epochs: int) -> str:
    """What ``--resume`` continues from, in one line."""
    if folder.done("stage1"):
        return (
            f"resumed {folder.root}: stage 1 is finished ({epoch} of {epochs} epochs, "
            f"{STAGE1}); what follows it runs again where it is not done"
        )
    return f"resumed {folder.root}: stage 1 continues after epoch {epoch} of {epochs} ({STAGE1})"


def _stage1(
    cfg: FitConfig,
    opts: FitOptions,
    rt: runtime.Runtime,
    folder: RunFolder,
    data: LTData,
    model: Classifier,
    counts: np.ndarray,
    progress: Progress,
    say: Say,
) -> tuple[int, list[dict[str, float]]]:
    """Train (or finish) stage 1; returns the number of images this rank trained on now and
    the per-epoch record of every stage-1 epoch (empty for a checkpoint from before lort kept
    one)."""
    resume = None
    if folder.path(STAGE1).exists() or folder.done("stage1"):
        resume = Stage1State(**folder.load_torch(STAGE1)["state"])
    if resume is not None and checkpoint_head(resume.model) != stage1_head(cfg.stage1_loss):
        # An ldam-drw stage 1 of an earlier lort, which trained a linear head.
        if not folder.done("stage1"):
            raise InputError(
                f"{folder.path(STAGE1)} is an unfinished stage 1 with a linear head, from "
                "before ldam-drw trained the normalised one: start again with "
                f"`lort fit --out {folder.root} --overwrite`"
            )
        model.head = classifier_head(
            checkpoint_head(resume.model), model.feature_dim, data.num_classes
        )
    if resume is not None:  # only a --resume finds a checkpoint: a fresh run has none
        say(_resumed(folder, resume.epoch, cfg.stage1.epochs))
    if folder.done("stage1") and resume is not None:
        model.load_state_dict(resume.model)
        return 0, resume.history
    history = [] if resume is None else list(resume.history)

    def checkpoint(state: Stage1State) -> None:
        history[:] = state.history
        if rt.is_main:
            folder.save_torch(STAGE1, {"state": dataclasses.asdict(state), "config": cfg.to_dict()})

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
        freeze_backbone=cfg.freeze_backbone,
        backbone_lr_scale=cfg.backbone_lr_scale,
        schedule=cfg.stage1_schedule,
    )
    model.cpu()
    if rt.is_main:
        folder.mark_done("stage1")
    if rt.distributed:
        dist.barrier()
    return images, history


def _eval_sets(data: LTData, splits: tuple[str, ...], rt: runtime.Runtime) -> dict[str, Any]:
    """The unaugmented splits: decoded once onto the device where that applies."""
    present = {"train": True, "val": data.val_labels is not None, "test": True}
    sets: dict[str, Any] = {}
    for s in (s for s in splits if present[s]):
        decoded = data.tensor_images(s, rt.device)  # type: ignore[arg-type]
        sets[s] = data.dataset(s, augment=False) if decoded is None else decoded  # type: ignore[arg-type]
    return sets


def _features(
    rt: runtime.Runtime,
    folder: RunFolder,
    data: LTData,
    model: nn.Module,
    cfg: FitConfig,
    say: Say,
) -> FeatureCache:
    """The feature cache: the one on disk when it is intact, else taken again from the
    stage-1 backbone (a damaged or deleted cache is rebuilt with a note)."""
    remedy = "rebuilding it from the stage-1 backbone"
    cache = _intact_cache(folder, say, remedy) if rt.is_main else None
    if rt.is_main and cache is None:
        sets = _eval_sets(data, ("train", "val", "test"), rt)
        flip = cfg.flip_tta and data.mirrorable
        save_extracted(folder, model.backbone, sets, rt, flip=flip, dtype=cfg.cache_dtype)
        folder.mark_done("features")
    if rt.distributed:
        dist.barrier()
    return open_cache(folder) if cache is None else cache


def _given_features(
    rt: runtime.Runtime, folder: RunFolder, data: LTData, cfg: FitConfig, say: Say
) -> FeatureCache:
    """A features run's cache: the given arrays, copied into the run folder so that the run
    stands on its own (compare, sweep and predict read the copy); copied again when the copy
    is damaged or missing."""
    cache = _intact_cache(folder, say, "copying it again") if rt.is_main else None
    if rt.is_main and cache is None:
        save_given(folder, data, flip=cfg.flip_tta and data.mirrorable, dtype=cfg.cache_dtype)
        folder.mark_done("features")
    if rt.distributed:
        dist.barrier()
    return open_cache(folder) if cache is None else cache


def _split_labels(folder: RunFolder, data: LTData, say: Say) -> None:
    """Every split's labels beside the feature cache (written again when damaged or missing),
    so that the run can be re-trained on without its images."""
    if folder.path(SPLIT_LABELS).is_file():
        try:
            folder.load_npz(SPLIT_LABELS)
            return
        except DamagedFileError as e:
            _noting(say)(f"{e}; writing it again")
    labels = {"train": data.train_labels, "test": data.test_labels}
    if data.val_labels is not None:
        labels["val"] = data.val_labels
    folder.write_npz(SPLIT_LABELS, **{k: v.astype(np.int64) for k, v in labels.items()})


def _intact_cache(folder: RunFolder, say: Say, remedy: str) -> FeatureCache | None:
    """The feature cache when its phase is done and every file of it intact; a damaged or
    missing one is noted and the phase marked as not done."""
    if not folder.done("features"):
        return None
    try:
        return open_cache(folder)
    except DamagedFileError as e:
        _noting(say)(f"{e}; {remedy}")
        folder.undo("features")
        return None


def _linear_stage1(
    cfg: FitConfig,
    rt: runtime.Runtime,
    folder: RunFolder,
    data: LTData,
    cache: FeatureCache,
    counts: np.ndarray,
    progress: Progress,
) -> nn.Linear:
    """A features run's stage-1 classifier, the head every stage-2 method starts from: a fresh
    ``nn.Linear`` (seeded), trained with cross-entropy and weight decay on the features when
    ``--epochs1`` > 0. Saved as ``stage1.ckpt`` like an image run's (head tensors only)."""
    if folder.done("stage1"):
        return stage1_init(folder.load_torch(STAGE1)["state"]["model"])
    feats = cache.tensor("train")
    assert feats is not None  # the loader requires training features
    head = nn.Linear(feats.shape[1], data.num_classes)
    if cfg.stage1.epochs > 0:
        trained = train_head_cached(
            get_method("ce"),
            feats,
            cache.tensor("train", flipped=True),
            torch.from_numpy(data.train_labels),
            counts,
            head,
            cfg.stage1,
            smooth=0.0,
            seed=cfg.seed,
            progress=lambda _, *rest: progress("stage 1", *rest),
        )
        head = stage1_init(trained.state_dict(), prefix="")
    state = {"head.weight": head.weight.detach(), "head.bias": head.bias.detach()}
    if rt.is_main:
        stage1 = Stage1State(state, {}, {}, cfg.stage1.epochs)
        folder.save_torch(STAGE1, {"state": dataclasses.asdict(stage1), "config": cfg.to_dict()})
        folder.mark_done("stage1")
    return head


def _stage2_live(
    cfg: FitConfig,
    rt: runtime.Runtime,
    method: Method,
    data: LTData,
    model: nn.Module,
    counts: np.ndarray,
    smooth: float,
    progress: Progress,
) -> nn.Module:
    """Stage 2 with the frozen backbone in the loop and augmentation on."""
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


def _baselines(
    problem: Stage2, method: Method, stop: Literal["val", "last"], progress: Progress
) -> dict[str, Any]:
    """Test accuracy of plain CE re-training and post-hoc logit adjustment on the
    same cached features and seed, their epoch kept as the method's: the yardstick for the
    chosen method. ``progress`` sees each one's training as "baseline"."""
    out: dict[str, Any] = {"method": {"name": method.name}}
    for name in BASELINES:
        if name == method.name:
            continue
        other = get_method(name)
        head, _, _ = problem.train_kept(
            other, 0.0, stop, progress=lambda _, *rest: progress("baseline", *rest)
        )
        z = problem.logits(other, head, "test")
        out[name] = problem.evaluate(z, hessian="none").group_accuracies()
    return out
