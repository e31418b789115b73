"""Benchmark: G stage-2 heads trained at once (lort.stage2.grid) against one at a time.

Run (from the repository root, in the project's venv)::

    python benches/stage2_grid.py [--sizes cifar100-lt,imagenet-lt,inat] [--grids 1,4,16,64]
        [--repeats 3] [--threads 2] [--method lort] [--seeds 1] [--max-sequential 16]
        [--budget-gib GIB]

What it does, for each size (synthetic non-negative features, a plain and a flipped view, as
the feature cache holds them; D = 512; 20 epochs of batch 64, lr around 5e-4, SGD momentum
0.9, cosine, the recipe of benches/stage2_modes.py):

* cifar100-lt: the CIFAR-100-LT counts, n_i = floor(500 * (1/100)^(i/99)), 10,847 x 512, K 100;
* imagenet-lt: K = 1,000, 4,096 samples with labels drawn from a long tail of imbalance 100;
* inat: K = 8,142, 4,096 samples drawn the same way (many classes have none: use a method
  that does not need every class's count, such as the default lort or ce).

For every G of ``--grids``: G configurations of ``--method`` (learning rates 2.5e-4 .. 2e-3
and, for a method with a hyperparameter, several values of it; ``--seeds`` seeds) trained by
``lort.stage2.grid.train_head_grid`` in one call (timed), then the same configurations trained
one by one with ``lort.stage2.loop.train_head_cached`` (timed, alternating with the batched runs, so
both see the same machine). Only the first ``--max-sequential`` of them are trained one by one;
for larger G the one-by-one time is their mean per configuration times G, marked
"extrapolated". After one untimed one-epoch warm-up of each, ``--repeats`` rounds; medians are
reported.

The arithmetic floor is the products' FLOPs (forward and weight gradient,
4 n epochs D K per configuration) divided by the best float32 GEMM rate measured here at
``--threads`` threads, before the runs and again after each size: a 1024^3 product and the
step's own products at the largest G.

What it prints: the machine (CPU, torch, threads, load average and the busiest other
processes at the start and the end), the exact command and the lort commit, the GEMM rates,
each run, then a table per size (G, heads per chunk, batched seconds, seconds per
configuration, one-by-one seconds, speedup, floor, batched / floor) and the same as Markdown.
The cached reference picks its own thread count (one thread below
``lort.stage2.loop.SMALL_STEP`` multiply-adds a step), the grid uses ``--threads`` once a step is
that large; timings on a shared machine are noisy: compare only rows of one run.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from _tables import fmt_md, fmt_table  # benches/ is on sys.path when run as a script
from lort.methods import METHODS, Method, get_method
from lort.optim import StageConfig
from lort.stage2.grid import HeadConfig, chunk_size, default_memory_budget, train_head_grid
from lort.stage2.loop import train_head_cached
from stage2_modes import cifar100_lt_counts, code_version, cpu_model

SEED = 20_240_301
DIM = 512
EPOCHS = 20
BATCH = 64
LR = 5e-4
# Values of each method's hyperparameter that a grid cycles through.
HYPER_VALUES = {
    "smooth": (0.98, 0.95, 0.9, 0.99),
    "focal_gamma": (1.0, 2.0, 0.5, 3.0),
    "cb_beta": (0.9999, 0.999, 0.99, 0.9),
    "ldam_max_margin": (0.5, 0.3, 0.7, 0.1),
    "threshold": (0.1, 0.2, 0.5, 1.0),
    "tau": (1.0, 0.5, 1.5, 2.0),
}


@dataclass(frozen=True)
class Size:
    name: str
    num_classes: int
    samples: int | None  # None: the CIFAR-100-LT counts


SIZES = {
    s.name: s
    for s in (
        Size("cifar100-lt", 100, None),
        Size("imagenet-lt", 1000, 4096),
        Size("inat", 8142, 4096),
    )
}


def make_data(
    size: Size, dim: int = DIM
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(SEED)
    k = size.num_classes
    if size.samples is None:
        labels = np.repeat(np.arange(k), cifar100_lt_counts())
        rng.shuffle(labels)
    else:
        p = 0.01 ** (np.arange(k) / (k - 1))
        labels = rng.choice(k, size.samples, p=p / p.sum())
    g = torch.Generator().manual_seed(SEED + k)
    n = len(labels)
    feats, flip = torch.rand(n, dim, generator=g), torch.rand(n, dim, generator=g)
    return feats, flip, torch.from_numpy(labels), np.bincount(labels, minlength=k)


def make_configs(method: Method, g: int, seeds: int) -> list[HeadConfig]:
    hyper = method.hyper[0] if method.hyper and method.hyper[0] in HYPER_VALUES else None
    configs = []
    for j in range(g):
        lr = LR * 2.0 ** (j % 4 - 1)
        h = {} if hyper is None else {hyper: HYPER_VALUES[hyper][(j // 4) % 4]}
        configs.append(HeadConfig(StageConfig(EPOCHS, lr, 0.0, BATCH), j % seeds, h))
    return configs


def alone(
    method: Method,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray],
    init: nn.Linear,
    c: HeadConfig,
    epochs: int = EPOCHS,
) -> None:
    feats, flip, labels, counts = data
    st = StageConfig(epochs, c.stage.lr, c.stage.weight_decay, c.stage.batch_size)
    smooth = c.hyper.get("smooth", 0.0)
    train_head_cached(method, feats, flip, labels, counts, init, st, smooth=smooth, seed=c.seed)


def batched(
    method: Method,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray],
    init: nn.Linear,
    configs: list[HeadConfig],
    budget: int,
    epochs: int = EPOCHS,
) -> None:
    feats, flip, labels, counts = data
    if epochs != EPOCHS:
        configs = [
            HeadConfig(StageConfig(epochs, c.stage.lr, 0.0, BATCH), c.seed, c.hyper)
            for c in configs
        ]
    train_head_grid(method, feats, flip, labels, counts, init, configs, memory_budget=budget)


def timed(fn: Callable[..., None], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def gemm_rate(shapes: list[tuple[str, torch.Tensor, torch.Tensor]]) -> list[tuple[str, float]]:
    """Best GFLOP/s of ``a @ b`` over 5 rounds of 10 products, per shape."""
    out = []
    for name, a, b in shapes:
        for _ in range(3):
            a @ b
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(10):
                a @ b
            best = min(best, (time.perf_counter() - t0) / 10)
        out.append((name, 2 * a.shape[0] * a.shape[1] * b.shape[1] / best / 1e9))
    return out


def busiest() -> str:
    """The three busiest other processes (command name and %CPU), from ps."""
    try:
        ps = subprocess.run(
            ["ps", "-eo", "pid=,pcpu=,comm=", "--sort=-pcpu"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    rows = [line.split(None, 2) for line in ps.splitlines() if line.strip()]
    others = [f"{r[2]} {r[1]}%" for r in rows if len(r) == 3 and int(r[0]) != os.getpid()]
    return ", ".join(others[:3])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--sizes", default=",".join(SIZES), help="comma-separated sizes")
    ap.add_argument("--grids", default="1,4,16,64", help="comma-separated numbers of heads")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--method", default="lort", choices=list(METHODS))
    ap.add_argument("--seeds", type=int, default=1, help="seeds the configurations spread over")
    ap.add_argument(
        "--max-sequential",
        type=int,
        default=16,
        help="configurations actually trained one by one per grid; beyond: extrapolated",
    )
    ap.add_argument("--budget-gib", type=float, default=None, help="head_grid memory budget")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(s not in SIZES for s in sizes):
        ap.error(f"--sizes: choose from {', '.join(SIZES)}")
    try:
        grids = [int(g) for g in args.grids.split(",")]
    except ValueError:
        ap.error("--grids: comma-separated integers")
    if min(grids) < 1 or min(args.repeats, args.threads, args.seeds, args.max_sequential) < 1:
        ap.error("--grids, --repeats, --threads, --seeds and --max-sequential must be >= 1")
    torch.set_num_threads(args.threads)
    method = get_method(args.method)
    budget = (
        default_memory_budget(torch.device("cpu"))
        if args.budget_gib is None
        else int(args.budget_gib * (1 << 30))
    )
    started = time.perf_counter()

    def say(text: str = "") -> None:
        print(text, flush=True)

    command = shlex.join([os.path.basename(sys.executable), *sys.argv])
    say("# lort stage-2 benchmark: a grid of heads at once against one at a time")
    say(f"command:  {command}")
    say(f"cpu:      {cpu_model()} ({os.cpu_count()} logical CPUs)")
    say(f"torch:    {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    say(f"lort:     {code_version()}")
    say(f"date:     {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    say(f"load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; busiest: {busiest()}")
    say(
        f"recipe:   {args.method}, {EPOCHS} epochs, batch {BATCH}, SGD momentum 0.9, cosine; "
        f"memory budget {budget / (1 << 30):.1f} GiB"
    )

    # The floor's rate: the best of a large product and the largest grid's own products.
    big = max(grids)
    a = torch.rand(1024, 1024)
    shapes = [("1024 x 1024 x 1024", a, a)]
    for name in sizes:
        gk = SIZES[name].num_classes * min(
            big, chunk_size(method, DIM, SIZES[name].num_classes, BATCH, budget)
        )
        x, w, dz = torch.rand(BATCH, DIM), torch.rand(gk, DIM), torch.rand(BATCH, gk)
        shapes += [
            (f"{BATCH} x {DIM} x {gk} (forward)", x, w.T),
            (f"{gk} x {BATCH} x {DIM} (weight gradient)", dz.T, x),
        ]
    rates = gemm_rate(shapes)
    peak = max(r for _, r in rates)
    for name, r in rates:
        say(f"gemm:     {name}: {r:.1f} GFLOP/s")
    say(f"floor:    FLOPs / {peak:.1f} GFLOP/s")
    say()

    md_blocks = []
    for name in sizes:
        size = SIZES[name]
        data = make_data(size)
        n, k = len(data[2]), size.num_classes
        torch.manual_seed(SEED)
        init = nn.Linear(DIM, k)
        flops = (2 if method.head == "lws" else 4) * n * EPOCHS * DIM * k
        per_chunk = chunk_size(method, DIM, k, BATCH, budget)
        say(f"## {name}: {n:,} x {DIM} features, K = {k:,}, {math.ceil(n / BATCH)} steps an epoch")
        first = make_configs(method, 1, 1)[0]
        alone(method, data, init, first, epochs=1)  # warm-up
        for g in grids:
            batched(method, data, init, make_configs(method, g, args.seeds), budget, epochs=1)
        grid_s: dict[int, list[float]] = {g: [] for g in grids}
        seq_s: dict[int, list[float]] = {g: [] for g in grids}
        one_s: list[float] = []
        for rep in range(args.repeats):
            for g in grids:
                configs = make_configs(method, g, args.seeds)
                grid_s[g].append(timed(batched, method, data, init, configs, budget))
                singles = [
                    timed(alone, method, data, init, c) for c in configs[: args.max_sequential]
                ]
                one_s += singles
                seq_s[g].append(sum(singles) * g / len(singles))
                say(
                    f"   round {rep + 1} G={g}: batched {grid_s[g][-1]:.2f} s, one by one "
                    f"{seq_s[g][-1]:.2f} s"
                    + (f" (extrapolated from {len(singles)})" if len(singles) < g else "")
                )
        header = [
            "G",
            "heads/chunk",
            "batched s",
            "s/config",
            "one by one s",
            "speedup",
            "floor s",
            "batched/floor",
        ]
        # The rate again after the runs: on a shared machine the best of both is the floor.
        again = max(r for _, r in gemm_rate(shapes))
        if again > peak:
            say(f"floor:    FLOPs / {again:.1f} GFLOP/s (measured again after {name})")
            peak = again
        single = statistics.median(one_s)
        rows = [
            [
                "1 alone (train_head_cached)",
                "—",
                "—",
                f"{single:.3f}",
                f"{single:.3f}",
                "1x",
                f"{flops / peak / 1e9:.3f}",
                f"{single / (flops / peak / 1e9):.1f}",
            ]
        ]
        for g in grids:
            b, s = statistics.median(grid_s[g]), statistics.median(seq_s[g])
            floor = g * flops / peak / 1e9
            extrapolated = " (extrapolated)" if g > args.max_sequential else ""
            chunks = math.ceil(g / per_chunk)
            rows.append(
                [
                    str(g),
                    str(math.ceil(g / chunks)),
                    f"{b:.3f}",
                    f"{b / g:.3f}",
                    f"{s:.3f}{extrapolated}",
                    f"{s / b:.1f}x",
                    f"{floor:.3f}",
                    f"{b / floor:.2f}",
                ]
            )
        say()
        say(fmt_table(rows, header))
        say()
        md_blocks.append(
            f"{name}: {n:,} x {DIM} features, K = {k:,}, {EPOCHS} epochs of batch {BATCH}, "
            f"{args.method}, median of {args.repeats}\n\n" + fmt_md(rows, header)
        )

    say("## Markdown")
    say()
    say(
        f"{cpu_model()}, torch {torch.__version__}, {args.threads} threads, floor at "
        f"{peak:.0f} GFLOP/s. Command: `{command}`"
    )
    say()
    say("\n\n".join(md_blocks))
    say()
    say(
        f"load avg at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"busiest: {busiest()}"
    )
    say(f"total benchmark time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
