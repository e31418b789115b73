"""Benchmark: `lort compare`'s searches on one finished run, against their arithmetic floor.

Run (from the repository root, in the project's venv, on a finished run such as the CIFAR-10-LT
CPU recipe's ``lort fit --config recipes/cifar10-lt-ir100-cpu.yaml --data-root DATA --out RUN``)::

    python benches/compare_protocols.py RUN [--threads 2] [--seeds 3]

What it times (each (method, seed) plan trained and chosen as `lort compare` does, through
``lort.experiments.protocols.run_plan``, nothing written to RUN):

* ``compositions``: the tuned protocol of lort+logit-adjust, lort+cb-resample,
  lort+balanced-softmax and lort+maxnorm for the run's seed (issue 20's target: <= 2 min on the
  2-core machine); the reference, in the same run, is the same search with every configuration
  trained on its own (each tau of lort+logit-adjust a head of its own, as before tau-only
  candidates shared their training);
* ``paper``: the paper protocol of the twelve methods of Table 1 for ``--seeds`` stage-2 seeds
  (target: <= 5 min).

The floor of each is its arithmetic: for every head trained, 4 n D K flops per epoch (the
forward product and the weight gradient over the n training rows), plus 2 D K per row of the
split each candidate is scored on after every epoch (both views where the run averages flips),
and the kept configuration trained again alone with validation and test scored (its test
curve), divided by the best float32 GEMM rate measured here at ``--threads`` threads on the
step's own shape (batch x D by D x K) and on a 1024^3 product.
It ignores everything but products, so time / floor says how far the search is from its
arithmetic, not how far it could be brought.

What it prints: the machine (torch, threads, load average at the start and the end), the
command, the lort commit, the GEMM rates, and per search: plans, configurations, heads trained,
seconds, the floor and their ratio, with the reference's seconds and the speedup. Timings on a
shared machine are noisy: compare only rows of one run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lort.stage2.grid as grid_module
from _tables import fmt_md, fmt_table
from lort.experiments.protocols import Plan, plan, run_plan
from lort.methods import TABLE1
from lort.run.finished import FinishedRun, open_run
from stage2_grid import gemm_rate

COMPOSITIONS = ("lort+logit-adjust", "lort+cb-resample", "lort+balanced-softmax", "lort+maxnorm")


def floor_flops(run: FinishedRun, plans: list[Plan], shared: bool) -> tuple[int, int, float]:
    """(configurations, heads trained, flops) of the plans' training and scoring."""
    problem = run.problem
    n = len(problem.data.train_labels)
    d, k = problem.init.in_features, problem.k
    views = 2 if problem.flips else 1
    val = len(problem.data.labels("val")) if problem.has_val else 0
    test = len(problem.data.test_labels)
    configs = heads = 0
    flops = 0.0
    for p in plans:
        configs += len(p.candidates)
        if not p.recipe.retrains:
            flops += len(p.candidates) * 2 * d * k * views * (val + test)
            continue
        keys = {grid_module._training_key(c) for c in p.candidates} if shared else p.candidates
        trained = len(keys)
        heads += trained
        epochs = p.candidates[0].stage.epochs
        on = val if p.choose_on == "val" else test
        row = 2 * d * k * views  # scoring one row of one split
        flops += epochs * (trained * 4 * n * d * k + len(p.candidates) * row * on)
        if p.choose_on == "val" and len(p.candidates) > 1:
            # run_plan trains the kept configuration again alone for its test curve.
            heads += 1
            flops += epochs * (4 * n * d * k + row * (val + test))
    return configs, heads, flops


def time_plans(run: FinishedRun, plans: list[Plan]) -> float:
    t0 = time.perf_counter()
    for p in plans:
        run_plan(run, p)
    return time.perf_counter() - t0


def each_alone(config: grid_module.HeadConfig) -> tuple[object, ...]:
    """The reference's training key: every configuration its own training."""
    return (id(config),)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"command: python {shlex.join(sys.argv)}")
    print(f"lort commit {commit}, torch {torch.__version__}, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    run = open_run(args.run)
    problem = run.problem
    d, k = problem.init.in_features, problem.k
    batch = run.cfg.stage2.batch_size
    rates = gemm_rate([
        (f"step {batch}x{d} @ {d}x{k * 64}", torch.randn(batch, d), torch.randn(d, k * 64)),
        ("1024^3", torch.randn(1024, 1024), torch.randn(1024, 1024)),
    ])  # fmt: skip
    for name, r in rates:
        print(f"gemm {name}: {r:.1f} GFLOP/s")
    rate = max(r for _, r in rates) * 1e9
    seed = run.cfg.seed
    searches = {
        "compositions (tuned, 1 seed)": [plan(run, m, seed, "tuned") for m in COMPOSITIONS],
        f"paper (12 methods, {args.seeds} seeds)": [
            plan(run, m, seed + s, "paper") for m in TABLE1 for s in range(args.seeds)
        ],
    }
    rows = []
    for name, plans in searches.items():
        configs, heads, flops = floor_flops(run, plans, shared=True)
        seconds = time_plans(run, plans)
        floor = flops / rate
        ref = speedup = "—"
        if name.startswith("compositions") and not args.skip_reference:
            with mock.patch.object(grid_module, "_training_key", each_alone):
                before = time_plans(run, plans)
            _, ref_heads, _ = floor_flops(run, plans, shared=False)
            ref, speedup = f"{before:.1f} ({ref_heads} heads)", f"{before / seconds:.2f}x"
        rows.append([
            name, str(len(plans)), str(configs), str(heads), f"{seconds:.1f}", f"{floor:.1f}",
            f"{seconds / floor:.1f}", ref, speedup,
        ])  # fmt: skip
        print(f"{name}: {seconds:.1f} s", flush=True)
    header = ["search", "plans", "configs", "heads trained", "s", "floor s", "s / floor",
              "each alone s", "speedup"]  # fmt: skip
    print()
    print(fmt_table(rows, header))
    print()
    print(fmt_md(rows, header))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
