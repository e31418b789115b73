"""Profile: where a stage-2 step's time goes, against its products, in process CPU time.

Run (from the repository root, in the project's venv)::

    python benches/stage2_step_profile.py [--size cifar100-lt] [--dim 512] [--path grid|alone]
        [--heads 1] [--epochs 2] [--repeats 3] [--profile] [--val-rows N] [--progress]

It trains ``--heads`` LORT heads on the synthetic data of ``benches/stage2_grid.py`` (``--size``:
cifar100-lt is 10,847 rows, K = 100; imagenet-lt 4,096 rows, K = 1,000; ``--dim`` features,
512 by default, 2,048 for the paper's ResNet-50 features) for ``--epochs``
epochs of batch 64, either through ``lort.stage2.grid.train_head_grid`` (``grid``) or one head
through ``lort.stage2.loop.train_head_cached`` (``alone``), on one thread, and prints the median
CPU seconds of ``--repeats`` runs (after one warm-up), the milliseconds per step, and the ratio
to the floor: the forward and weight-gradient products (4 n D K flops per head-epoch) at the
best float32 GEMM rate measured in the same process on the step's own shapes and on 1024^3.
Process CPU time, not wall time: on a shared machine other processes' load inflates wall time
but not (much) this process's own work, so the ratio stays comparable between runs.
``--profile`` adds cProfile's 20 most expensive functions by own time for one more run.
``--val-rows N`` (grid) also scores the first N training rows, both views, as a validation
split after every epoch, as a compare's search does; ``--progress`` (alone) passes a progress
callback, as ``lort fit`` does, so the loss and accuracy are read back as it asks. The floor
counts the training products only.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time

import torch
from torch import nn

from lort.methods import get_method
from lort.optim import StageConfig
from lort.stage2.grid import EvalSplit, HeadConfig, train_head_grid
from lort.stage2.loop import train_head_cached
from stage2_grid import BATCH, DIM, SIZES, make_configs, make_data


def cpu_gemm_rate(a: torch.Tensor, b: torch.Tensor) -> float:
    """Best GFLOP/s of ``a @ b`` in process CPU time over 5 rounds of 50 products."""
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(50):
            a @ b
        best = min(best, (time.process_time() - t0) / 50)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="cifar100-lt", choices=list(SIZES))
    ap.add_argument("--path", default="grid", choices=["grid", "alone"])
    ap.add_argument("--dim", type=int, default=DIM)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--val-rows", type=int, default=0, help="grid: score N rows after each epoch")
    ap.add_argument("--progress", action="store_true", help="alone: with a progress callback")
    args = ap.parse_args()
    torch.set_num_threads(1)
    size = SIZES[args.size]
    feats, flip, labels, counts = make_data(size, args.dim)
    dim = args.dim
    k, n = size.num_classes, len(labels)
    torch.manual_seed(0)
    init = nn.Linear(dim, k)
    method = get_method("lort")
    heads = 1 if args.path == "alone" else args.heads
    configs = [
        HeadConfig(StageConfig(args.epochs, c.stage.lr, 0.0, BATCH), c.seed, c.hyper)
        for c in make_configs(method, heads, 1)
    ]

    rows = slice(0, args.val_rows)
    val = EvalSplit(feats[rows], flip[rows], labels[rows]) if args.val_rows else None

    def run() -> None:
        if args.path == "alone":
            c = configs[0]
            train_head_cached(
                method, feats, flip, labels, counts, init, c.stage,
                smooth=c.hyper.get("smooth", 0.0), seed=c.seed,
                progress=(lambda *_: None) if args.progress else None,
            )  # fmt: skip
        else:
            train_head_grid(method, feats, flip, labels, counts, init, configs, val=val)

    run()
    times = []
    for _ in range(args.repeats):
        t0 = time.process_time()
        run()
        times.append(time.process_time() - t0)
    seconds = statistics.median(times)
    gk = heads * k
    x, w, dz = torch.rand(BATCH, dim), torch.rand(gk, dim), torch.rand(BATCH, gk)
    rates = {
        "forward": cpu_gemm_rate(x, w.T),
        "weight gradient": cpu_gemm_rate(dz.T, x),
        "1024^3": cpu_gemm_rate(torch.rand(1024, 1024), torch.rand(1024, 1024)),
    }
    floor = 4 * n * args.epochs * dim * gk / max(rates.values()) / 1e9
    steps = -(-n // BATCH) * args.epochs
    print(f"{args.path}, {heads} head(s), {args.size}: {n:,} x {dim}, K = {k:,}, batch {BATCH}")
    print("gemm (CPU time): " + ", ".join(f"{s} {r:.1f} GFLOP/s" for s, r in rates.items()))
    each = ", ".join(f"{t:.3f}" for t in times)
    print(f"CPU s (median of {args.repeats}): {seconds:.3f} ({each}); "
          f"{seconds / steps * 1e3:.3f} ms a step; floor {floor:.3f} s; "
          f"ratio {seconds / floor:.2f}")  # fmt: skip
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run()
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
        print(out.getvalue())


if __name__ == "__main__":
    main()
