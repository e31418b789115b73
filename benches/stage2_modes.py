"""Benchmark: stage 2 (classifier re-training) on cached features against live mode.

The target (CIFAR100-LT sizes): 20 epochs of one method on cached features of
10,847 x 512 with 100 classes in at most 2 s on the CPU, and the ratio against
live mode (the frozen backbone in the loop) on the same data.

Run (from the repository root, in the project's venv)::

    python benches/stage2_modes.py [--methods lort | all | lort,ce,...] [--repeats 3]
        [--threads 2] [--live-arch resnet34-cifar | resnet32] [--live-epochs 1]
        [--live-steps N] [--no-live]

What it does:

* builds synthetic CIFAR-100-LT-shaped data with a fixed seed: 100 classes with
  n_i = floor(500 * (1/100)^(i/99)) images (10,847 in all);
* cached: random non-negative 512-d features (a plain and a flipped view, as
  the feature cache holds them) and the labels go to
  ``lort.stage2.loop.train_head_cached`` with the paper's CIFAR100-LT stage-2 recipe
  ``StageConfig(epochs=20, lr=5e-4, weight_decay=0.0, batch_size=64)``,
  ``smooth=0.98`` for lort and 0.0 otherwise, ``seed=0`` and a fresh
  ``nn.Linear(512, 100)`` as the stage-1 classifier; ``--repeats`` timed runs
  per method (all of ``train_head_cached``: head, loss and sampler set-up
  included) after one untimed one-epoch warm-up run; the median is reported,
  with the CPU seconds (user + sys, all threads) of the process. The first
  method is also timed with a no-op progress callback, as ``lort fit`` passes
  one (it adds a ``.item()`` per step);
* live: the same 10,847 images as random 3x32x32 tensors in a TensorDataset,
  the backbone of ``build_model(--live-arch, 100)`` (by default resnet34-cifar,
  the paper's 512-d CIFAR100-LT backbone; ``--live-arch resnet32`` is a much
  cheaper 64-d one) and ``lort.stage2.loop.train_head_live`` with the same recipe,
  the first method, ``bn="eval"`` and ``workers=0``. Live mode is expensive
  on a small CPU, so only ``--live-epochs`` epochs (default 1) are run and the
  time is extrapolated linearly to 20 epochs; ``--live-steps N`` stops after N
  optimiser steps instead and extrapolates from the mean step time. Both the
  measured time and the extrapolation are printed, marked as such. When the
  live backbone's features are not 512-d, the first method is also timed on
  cached features of that width, so the ratio compares like with like.

What it prints: the CPU model, torch version and thread count, the exact
command line and the git commit of the lort code it ran (with the files under
python/ that differ from it); the cached runs; a table per mode (method, runs,
median seconds for 20 epochs, optimiser steps per second, ms per step, CPU
seconds, whether the 2 s target is met); the live measurement and its
extrapolation; the ratio live / cached for 20 epochs; and the same tables as
Markdown. The load average is printed at the start and the end: the timings
are only meaningful on an idle machine (with --threads 2 on a busy 2-core
machine torch's threads wait for each other and cached mode can slow down many
times over).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from _tables import fmt_md, fmt_table  # benches/ is on sys.path when run as a script
from lort.methods import METHODS, get_method
from lort.models import ARCHS, build_model
from lort.optim import StageConfig
from lort.runtime import Runtime
from lort.stage2.loop import train_head_cached, train_head_live

SEED = 20_240_301
NUM_CLASSES = 100
N_MAX = 500  # images of the largest class
IMBALANCE = 100  # largest / smallest class
FEATURE_DIM = 512  # resnet34-cifar
EPOCHS = 20
LR = 5e-4
BATCH = 64
LORT_SMOOTH = 0.98  # the paper's delta on CIFAR100-LT
TARGET_S = 2.0  # cached, 20 epochs


class StopLive(Exception):
    """Raised by the progress callback to end a live run after --live-steps steps."""


# --------------------------------------------------------------------------- data


def cifar100_lt_counts() -> np.ndarray:
    """n_i = floor(500 * (1/100)^(i/99)): 10,847 images over 100 classes."""
    i = np.arange(NUM_CLASSES, dtype=np.float64)
    return np.floor(N_MAX * (1.0 / IMBALANCE) ** (i / (NUM_CLASSES - 1))).astype(np.int64)


def make_labels(counts: np.ndarray) -> torch.Tensor:
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    np.random.default_rng(SEED).shuffle(labels)
    return torch.from_numpy(labels)


def cached_features(n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative features (as after a ReLU and average pooling), plain and flipped."""
    g = torch.Generator().manual_seed(SEED + dim)
    return torch.rand(n, dim, generator=g), torch.rand(n, dim, generator=g)


def stage_config(epochs: int) -> StageConfig:
    return StageConfig(epochs=epochs, lr=LR, weight_decay=0.0, batch_size=BATCH)


def smooth_of(method: str) -> float:
    return LORT_SMOOTH if method == "lort" else 0.0


def initial_head(dim: int) -> nn.Linear:
    torch.manual_seed(SEED)
    return nn.Linear(dim, NUM_CLASSES)


# ------------------------------------------------------------------- measurement


def time_cached(
    method: str,
    feats: torch.Tensor,
    feats_flip: torch.Tensor,
    labels: torch.Tensor,
    counts: np.ndarray,
    repeats: int,
    with_progress: bool,
) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) of `repeats` timed runs, after one untimed
    one-epoch warm-up run."""
    init = initial_head(feats.shape[1])
    progress = (lambda *_: None) if with_progress else None

    def one(epochs: int) -> None:
        train_head_cached(
            get_method(method),
            feats,
            feats_flip,
            labels,
            counts,
            init,
            stage_config(epochs),
            smooth=smooth_of(method),
            seed=0,
            progress=progress,
        )

    one(1)
    times, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        one(EPOCHS)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu


def time_live(
    method: str,
    arch: str,
    labels: torch.Tensor,
    counts: np.ndarray,
    epochs: int,
    max_steps: int | None,
) -> dict:
    """One live run of `epochs` epochs (or `max_steps` steps); per-step timestamps."""
    n = len(labels)
    g = torch.Generator().manual_seed(SEED + 1)
    images = torch.randn(n, 3, 32, 32, generator=g)
    train_set = TensorDataset(images, labels)
    torch.manual_seed(SEED)
    model = build_model(arch, NUM_CLASSES)
    stamps: list[float] = []
    total_steps = 0

    def progress(_phase: str, step: int, total: int, _loss: float, _acc: float) -> None:
        nonlocal total_steps
        stamps.append(time.perf_counter())
        total_steps = total
        if max_steps is not None and step >= max_steps:
            raise StopLive

    t0 = time.perf_counter()
    with contextlib.suppress(StopLive):
        train_head_live(
            get_method(method),
            model,
            train_set,
            labels.numpy(),
            counts,
            stage_config(epochs),
            Runtime(torch.device("cpu")),
            smooth=smooth_of(method),
            bn="eval",
            seed=0,
            workers=0,
            progress=progress,
        )
    wall = time.perf_counter() - t0
    steps = len(stamps)
    gaps = np.diff([t0, *stamps])
    return {
        "arch": arch,
        "feature_dim": model.feature_dim,
        "wall_s": wall,
        "steps": steps,
        "steps_per_epoch": total_steps // max(epochs, 1),
        "first_step_s": float(gaps[0]) if steps else float("nan"),
        "median_step_s": float(np.median(gaps)) if steps else float("nan"),
        "mean_step_s": wall / max(steps, 1),
        "full": max_steps is None or steps >= total_steps,
    }


# ------------------------------------------------------------------------ output


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_version() -> str:
    """The git commit of the checkout and the files under python/ that differ from it
    (read-only git queries; "unknown" outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(root), *argv], capture_output=True, text=True, check=True
        )
        return out.stdout.rstrip("\n")

    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = [line[3:] for line in git("status", "--porcelain", "--", "python").splitlines()]
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if not changed:
        return f"commit {head}, python/ unchanged"
    return f"commit {head}, working tree differs in {', '.join(changed)}"


def fmt_s(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds:.0f} s ({seconds / 3600:.1f} h)"
    if seconds >= 120:
        return f"{seconds:.0f} s ({seconds / 60:.1f} min)"
    return f"{seconds:.3f} s"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument(
        "--methods", default="lort", help="comma-separated method names, or 'all' (METHODS)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed cached runs per method")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--live-arch", default="resnet34-cifar", choices=ARCHS)
    ap.add_argument("--live-epochs", type=int, default=1, help="live epochs actually run")
    ap.add_argument(
        "--live-steps",
        type=int,
        default=None,
        help="stop live mode after this many steps (extrapolate from the mean step)",
    )
    ap.add_argument("--no-live", action="store_true", help="time cached mode only")
    args = ap.parse_args()

    if args.methods.strip() == "all":
        methods = list(METHODS)
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        ap.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)} or 'all'")
    if args.repeats < 1 or args.threads < 1 or args.live_epochs < 1:
        ap.error("--repeats, --threads and --live-epochs must be at least 1")
    if args.live_steps is not None and args.live_steps < 1:
        ap.error("--live-steps must be at least 1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def say(text: str = "") -> None:
        print(text, flush=True)

    counts = cifar100_lt_counts()
    labels = make_labels(counts)
    n = len(labels)
    steps_per_epoch = math.ceil(n / BATCH)
    steps = EPOCHS * steps_per_epoch
    command = shlex.join([os.path.basename(sys.executable), *sys.argv])

    say("# lort stage-2 benchmark: cached features against live mode")
    say(f"command:  {command}")
    say(f"cpu:      {cpu_model()} ({os.cpu_count()} logical CPUs)")
    say(
        f"torch:    {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
        f"{torch.get_num_interop_threads()} inter-op threads"
    )
    say(f"python:   {platform.python_version()}, numpy {np.__version__}")
    say(f"lort:     {code_version()}")
    say(f"date:     {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    say(f"load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    say(
        f"data:     {n:,} images, {NUM_CLASSES} classes, n_i = floor({N_MAX} * "
        f"(1/{IMBALANCE})^(i/{NUM_CLASSES - 1})): {counts[0]} .. {counts[-1]}"
    )
    say(
        f"recipe:   {EPOCHS} epochs x {steps_per_epoch} steps = {steps:,} steps, "
        f"batch {BATCH}, lr {LR:g}, wd 0, SGD momentum 0.9, cosine; smooth {LORT_SMOOTH} "
        f"for lort, 0 otherwise"
    )
    say()

    # ---------------------------------------------------------------- cached
    say(f"## cached: {n:,} x {FEATURE_DIM} features (plain + flipped), {args.repeats} runs each")
    feats, feats_flip = cached_features(n, FEATURE_DIM)
    cached: dict[str, list[float]] = {}
    cached_cpu: dict[str, list[float]] = {}
    runs = [(m, False) for m in methods]
    runs.insert(1, (methods[0], True))
    for m, with_progress in runs:
        name = f"{m} + progress callback" if with_progress else m
        cached[name], cached_cpu[name] = time_cached(
            m, feats, feats_flip, labels, counts, args.repeats, with_progress
        )
        say(
            f"   {name:<26} runs {' '.join(f'{t:.3f}' for t in cached[name])} s, "
            f"CPU {' '.join(f'{t:.3f}' for t in cached_cpu[name])} s"
        )
    header = [
        "method",
        "runs",
        f"median s ({EPOCHS} ep)",
        "steps/s",
        "ms/step",
        "CPU s",
        f"<= {TARGET_S:g} s",
    ]
    table = []
    for name, times in cached.items():
        med = statistics.median(times)
        table.append(
            [
                name,
                str(len(times)),
                f"{med:.3f}",
                f"{steps / med:,.0f}",
                f"{1000 * med / steps:.3f}",
                f"{statistics.median(cached_cpu[name]):.3f}",
                "yes" if med <= TARGET_S else "NO",
            ]
        )
    say()
    say(fmt_table(table, header))
    first = statistics.median(cached[methods[0]])
    met = [m for m in methods if statistics.median(cached[m]) <= TARGET_S]
    say(
        f"target: {EPOCHS} cached epochs in <= {TARGET_S:g} s: {methods[0]} "
        f"{'met' if first <= TARGET_S else 'NOT met'} ({first:.3f} s)"
        + (f"; {len(met)} of {len(methods)} methods met it" if len(methods) > 1 else "")
    )
    md_blocks = [
        f"Cached stage 2, {n:,} x {FEATURE_DIM} features, {NUM_CLASSES} classes, "
        f"{EPOCHS} epochs ({steps:,} steps of {BATCH}), {args.threads} threads\n\n"
        + fmt_md(table, header)
    ]
    say()

    # ------------------------------------------------------------------ live
    if not args.no_live:
        m = methods[0]
        what = (
            f"{args.live_steps} steps"
            if args.live_steps is not None
            else f"{args.live_epochs} epoch{'s' if args.live_epochs > 1 else ''}"
        )
        say(f"## live: {args.live_arch} backbone in the loop, method {m}, {what} measured")
        live = time_live(m, args.live_arch, labels, counts, args.live_epochs, args.live_steps)
        dim = live["feature_dim"]
        if dim != FEATURE_DIM:
            f_dim, f_flip_dim = cached_features(n, dim)
            key = f"{m} ({dim}-d features)"
            cached_ref, _ = time_cached(m, f_dim, f_flip_dim, labels, counts, args.repeats, False)
            say(
                f"   cached {key}: runs {' '.join(f'{t:.3f}' for t in cached_ref)} s "
                f"(the live backbone gives {dim}-d features)"
            )
        else:
            key = m
            cached_ref = cached[m]
        ref_s = statistics.median(cached_ref)
        if live["full"]:
            live_20 = live["wall_s"] * EPOCHS / args.live_epochs
            basis = f"{args.live_epochs} measured epoch(s) x {EPOCHS / args.live_epochs:g}"
        else:
            live_20 = live["mean_step_s"] * steps
            basis = f"mean of {live['steps']} measured steps x {steps:,} steps"
        ratio = live_20 / ref_s
        say(
            f"   measured: {fmt_s(live['wall_s'])} for {live['steps']} steps "
            f"({live['steps'] / live['wall_s']:.2f} steps/s; first step "
            f"{live['first_step_s']:.3f} s, median step {live['median_step_s']:.3f} s)"
        )
        say(f"   EXTRAPOLATED to {EPOCHS} epochs ({basis}): {fmt_s(live_20)}")
        lheader = [
            "mode",
            "features",
            "measured",
            "measured s",
            f"s for {EPOCHS} epochs",
            "steps/s",
            "live / cached",
        ]
        ltable = [
            [
                f"cached {m}",
                f"{dim}-d",
                f"{EPOCHS} epochs, median of {len(cached_ref)}",
                f"{ref_s:.3f}",
                f"{ref_s:.3f}",
                f"{steps / ref_s:,.0f}",
                "1x",
            ],
            [
                f"live {m}, {args.live_arch}",
                f"{dim}-d",
                f"{live['steps']} steps" + (f" ({what})" if live["full"] else ""),
                f"{live['wall_s']:.1f}",
                f"{live_20:.0f} (extrapolated)",
                f"{live['steps'] / live['wall_s']:.3f}",
                f"{ratio:,.0f}x",
            ],
        ]
        say()
        say(fmt_table(ltable, lheader))
        say(
            f"ratio live / cached for {EPOCHS} epochs: {ratio:,.0f}x "
            f"(live {fmt_s(live_20)}, EXTRAPOLATED from {what}; cached {key} {ref_s:.3f} s)"
        )
        md_blocks.append(
            f"Live against cached, {n:,} images, {args.live_arch} backbone, "
            f"{args.threads} threads (live time for {EPOCHS} epochs extrapolated from "
            f"{what})\n\n" + fmt_md(ltable, lheader)
        )
        say()

    say("## Markdown")
    say()
    say(
        f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads. "
        f"Command: `{command}`"
    )
    say()
    say("\n\n".join(md_blocks))
    say()
    say(f"load avg at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    say(f"total benchmark time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
