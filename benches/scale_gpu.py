"""Benchmark: stage-2 heads at the paper's shapes on an accelerator, features on the device,
products in float32, TF32 or bfloat16 where that keeps the results.

For each size of ``benches/scale.py`` (the same long-tailed counts, K and D; synthetic features
made on the device, a plain and a mirrored view, 20 validation rows per class), with
``lort.stage2.grid.train_head_grid`` (the grid ``lort compare`` trains with):

1. the GEMM rate of the device in each precision, on the step's own shape (batch x D by D x K)
   and on a 4096^3 product (1024^3 on a CPU);
2. the precision check: ``--check-heads`` LORT heads (learning rates around the recipe's) trained
   for ``--check-epochs`` epochs on a sample of ``--check-rows`` training rows in float32, then in
   TF32 (``torch.backends.cuda.matmul.allow_tf32``) and in bfloat16 (``torch.autocast``); a
   precision keeps the results when every head's best validation class-mean accuracy is within
   ``--tolerance`` points of float32's and its best epoch is the same;
3. the timing: ``--heads`` heads for ``--epochs`` epochs on all the training rows, in float32
   and in each precision that kept the results; heads per second (head-epochs per second), and
   the ratio of the time to the floor: 4 n D K flops per head-epoch plus 2 D K per validation row
   and view, at the device's best measured rate in that precision.

Prepared for a machine with an accelerator (one command, well within 10 minutes on an H100)::

    python benches/scale_gpu.py --device cuda --sizes imagenet-lt,inat2018

Tested on the CPU at a reduced size::

    python benches/scale_gpu.py --device cpu --sizes cifar100-lt-512 --heads 4 --epochs 2 \\
        --check-rows 2000 --rows-fraction 0.5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from _tables import fmt_md, fmt_table  # benches/ is on sys.path when run as a script
from lort.methods import get_method
from lort.optim import StageConfig
from lort.stage2.grid import EvalSplit, HeadConfig, train_head_grid
from scale import SIZES, STAGE2_BATCH, counts_of
from stage2_grid import gemm_rate

SEED = 20_261_207
LR = 5e-4
VAL_PER_CLASS = 20
PRECISIONS = ("float32", "tf32", "bf16")


@contextlib.contextmanager
def precision(name: str, device: torch.device) -> Iterator[None]:
    """Products in ``name``: float32 exactly, TF32 tensor cores, or bfloat16 autocast."""
    cuda = device.type == "cuda"
    before = torch.backends.cuda.matmul.allow_tf32 if cuda else None
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    try:
        if name == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = before  # type: ignore[assignment]


def make_features(
    counts: np.ndarray, dim: int, device: torch.device, fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, EvalSplit]:
    """Training rows (both views) and labels, and a validation split, made on the device."""
    k = len(counts)
    kept = np.maximum(1, np.floor(counts * fraction)).astype(np.int64)
    g = torch.Generator(device=device).manual_seed(SEED)
    means = torch.randn(k, dim, generator=g, device=device)

    def rows(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = means[labels] + 2.5 * torch.randn(len(labels), dim, generator=g, device=device)
        mirror = x + 0.1 * torch.randn(x.shape, generator=g, device=device)
        return x.clamp_(min=0), mirror.clamp_(min=0)

    y = torch.arange(k, device=device).repeat_interleave(torch.as_tensor(kept, device=device))
    x, xf = rows(y)
    vy = torch.arange(k, device=device).repeat_interleave(VAL_PER_CLASS)
    vx, vxf = rows(vy)
    return x, xf, y, EvalSplit(vx, vxf, vy)


def configs(heads: int, epochs: int) -> list[HeadConfig]:
    return [
        HeadConfig(StageConfig(epochs, LR * 2.0 ** (j % 4 - 1), 0.0, STAGE2_BATCH), j // 4,
                   {"smooth": (0.9, 0.95, 0.98, 0.99)[(j // 4) % 4]})
        for j in range(heads)
    ]  # fmt: skip


def train(
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, EvalSplit],
    counts: np.ndarray,
    cfgs: list[HeadConfig],
    prec: str,
    device: torch.device,
) -> tuple[float, list[tuple[float, int]]]:
    """Seconds, and each head's (best validation class-mean accuracy, best epoch)."""
    x, xf, y, val = data
    torch.manual_seed(SEED)  # the same stage-1 head for every precision
    init = torch.nn.Linear(x.shape[1], len(counts)).to(device)
    with precision(prec, device):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        results = train_head_grid(get_method("lort"), x, xf, y, counts, init, cfgs, val=val)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return seconds, [(100 * r.scores().val_accuracy, int(r.best_epoch or 0)) for r in results]


def rates(device: torch.device, dim: int, k: int) -> dict[str, float]:
    """The best GEMM rate (GFLOP/s) per precision, on the step's shape and a large square."""
    side = 4096 if device.type == "cuda" else 1024
    out = {}
    for prec in PRECISIONS:
        dtype = torch.bfloat16 if prec == "bf16" else torch.float32
        x = torch.rand(STAGE2_BATCH, dim, device=device, dtype=dtype)
        w = torch.rand(dim, k, device=device, dtype=dtype)
        big = torch.rand(side, side, device=device, dtype=dtype)
        with precision(prec, device):
            shapes = [("step", x, w), ("square", big, big)]
            if device.type == "cuda":
                measured = []
                for name, a, b in shapes:  # gemm_rate times on the host: synchronise each
                    a @ b
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    for _ in range(20):
                        a @ b
                    torch.cuda.synchronize()
                    t = (time.perf_counter() - t0) / 20
                    measured.append((name, 2 * a.shape[0] * a.shape[1] * b.shape[1] / t / 1e9))
            else:
                measured = gemm_rate(shapes)
        out[prec] = max(r for _, r in measured)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="imagenet-lt,inat2018", help=", ".join(SIZES))
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rows-fraction", type=float, default=1.0, help="of each class's rows")
    ap.add_argument("--check-rows", type=int, default=20_000)
    ap.add_argument("--check-heads", type=int, default=4)
    ap.add_argument("--check-epochs", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=0.5, help="accuracy points")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    device = torch.device(args.device)
    name_of = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"command: python {shlex.join(sys.argv)}")
    print(f"device {name_of}, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")
    results = {}
    for name in args.sizes.split(","):
        size = SIZES[name]
        counts = counts_of(name, size)
        rate = rates(device, size.dim, size.k)
        print(f"\n{name}: K = {size.k}, D = {size.dim}; GEMM GFLOP/s "
              + ", ".join(f"{p} {r:.0f}" for p, r in rate.items()))  # fmt: skip
        # The check: a sample of the rows, every precision against float32.
        sample = np.maximum(1, np.floor(counts * min(1.0, args.check_rows / counts.sum())))
        data = make_features(sample.astype(np.int64), size.dim, device, 1.0)
        check_cfgs = configs(args.check_heads, args.check_epochs)
        _, reference = train(data, sample, check_cfgs, "float32", device)
        kept = ["float32"]
        for prec in PRECISIONS[1:]:
            _, got = train(data, sample, check_cfgs, prec, device)
            worst = max(abs(a - b) for (a, _), (b, _) in zip(got, reference, strict=True))
            same_epochs = [e for _, e in got] == [e for _, e in reference]
            keeps = worst <= args.tolerance and same_epochs
            print(f"  check {prec}: largest accuracy difference {worst:.2f} points, best epochs "
                  f"{'the same' if same_epochs else 'differ'}: "
                  f"{'keeps' if keeps else 'does not keep'} the results")  # fmt: skip
            if keeps:
                kept.append(prec)
        del data
        # The timing, on every training row.
        data = make_features(counts, size.dim, device, args.rows_fraction)
        n, n_val = len(data[0]), len(data[3].labels)
        cfgs = configs(args.heads, args.epochs)
        flops = args.heads * args.epochs * (4 * n * size.dim * size.k
                                            + 2 * 2 * n_val * size.dim * size.k)  # fmt: skip
        table = []
        for prec in kept:
            seconds, _ = train(data, counts, cfgs, prec, device)
            floor = flops / (rate[prec] * 1e9)
            heads_per_s = args.heads * args.epochs / seconds
            table.append([prec, f"{seconds:.2f}", f"{heads_per_s:.2f}", f"{floor:.2f}",
                          f"{seconds / floor:.2f}x"])  # fmt: skip
            print(f"  {prec}: {table[-1][1:]}", flush=True)
        header = ["precision", "seconds", "head-epochs/s", "floor s", "time / floor"]
        print(f"  {args.heads} heads x {args.epochs} epochs on {n:,} rows (both views), "
              f"validation {n_val:,} rows scored after every epoch")  # fmt: skip
        print(fmt_table(table, header))
        print(fmt_md(table, header))
        results[name] = {"rates": rate, "kept": kept, "rows": n, "table": table}
        del data
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
