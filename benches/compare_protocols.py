"""Benchmark: `lort compare`'s searches on one finished run, against their arithmetic floor.

Run (from the repository root, in the project's venv, on a finished run such as the CIFAR-10-LT
CPU recipe's ``lort fit --config recipes/cifar10-lt-ir100-cpu.yaml --data-root DATA --out RUN``)::

    python benches/compare_protocols.py RUN [--threads 2] [--seeds 3]
    python benches/compare_protocols.py RUN [RUN ...] --searches [--protocols paper,tuned]
        [--methods lort,ce]
    python benches/compare_protocols.py RUN [RUN ...] --replay [--protocols paper,tuned]

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
arithmetic, not how far it could be brought. The searches are the default (successive halving)
ones; the floor counts the head-epochs they trained.

``--searches`` instead measures the halving search against the full one (`lort compare
--search`): on every RUN (e.g. five digits backbones), every method of Table 1 (or of
``--methods``) for the run's seed under each of ``--protocols``, both searches through
``run_plan``; per method the kept head's test top-1 accuracy (mean over the runs) under each
search and their difference, the head-epochs each trained (the kept configuration's
test-curve re-training included) and the seconds, then the totals.

``--replay`` trains every searched configuration of every method to its end once, with
validation and test scored after every epoch, and replays halving schedules on those curves (a
configuration kept by a rung trains exactly as in the full search, to rounding): for each
schedule (``HALVING_ETA``, ``HALVING_START`` of :mod:`lort.stage2.select`) the mean change in
the kept (configuration, epoch)'s test class-mean accuracy against the full search over the
searched (method, run) pairs, the worst one, and the head-epochs against the full search's.

What it prints: the machine (torch, threads, load average at the start and the end), the
command, the lort commit, the GEMM rates, and per search: plans, configurations, heads trained,
seconds, the floor and their ratio, with the reference's seconds and the speedup. Timings on a
shared machine are noisy: compare only rows of one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lort.stage2.grid as grid_module
import lort.stage2.select as select_module
from _tables import fmt_md, fmt_table, run_header
from lort.experiments.protocols import SEARCHES, Chosen, Plan, plan, run_plan
from lort.methods import TABLE1
from lort.run.finished import FinishedRun, open_run
from lort.stage2.select import ValScore, halving_rungs, ranked
from stage2_grid import gemm_rate

COMPOSITIONS = ("lort+logit-adjust", "lort+cb-resample", "lort+balanced-softmax", "lort+maxnorm")


def floor_flops(
    run: FinishedRun, plans: list[Plan], shared: bool, done: list[int] | None = None
) -> tuple[int, int, float]:
    """(configurations, heads trained, flops) of the plans' training and scoring, with each
    plan's head-epochs ``done`` where given (a halving search), else the full search's."""
    problem = run.problem
    n = len(problem.data.train_labels)
    d, k = problem.init.in_features, problem.k
    views = 2 if problem.flips else 1
    val = len(problem.data.labels("val")) if problem.has_val else 0
    test = len(problem.data.test_labels)
    configs = heads = 0
    flops = 0.0
    for i, p in enumerate(plans):
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
        again = p.choose_on == "val" and len(p.candidates) > 1
        # Head-epochs of the search (each scores its configurations on the choosing split).
        searched = epochs * trained if done is None else done[i] - epochs * again
        flops += searched * (4 * n * d * k + len(p.candidates) / trained * row * on)
        if again:
            # run_plan trains the kept configuration again alone for its test curve.
            heads += 1
            flops += epochs * (4 * n * d * k + row * (val + test))
    return configs, heads, flops


def time_plans(run: FinishedRun, plans: list[Plan]) -> tuple[float, list[int]]:
    """Seconds to run the plans, and each one's head-epochs trained."""
    t0 = time.perf_counter()
    trained = [run_plan(run, p).head_epochs for p in plans]
    return time.perf_counter() - t0, trained


def each_alone(config: grid_module.HeadConfig) -> tuple[object, ...]:
    """The reference's training key: every configuration its own training."""
    return (id(config),)


def test_accuracy(run: FinishedRun, p: Plan, chosen: Chosen) -> float:
    """The kept head's test top-1 accuracy, with the tau it was chosen with."""
    problem = run.problem
    tau = chosen.config.hyper.get("tau")
    logits = problem.logits(p.method, chosen.head, "test", tau)
    return float((logits.argmax(1) == problem.data.test_labels).mean())


def search_study(runs: list[Path], protocols: list[str], methods: list[str]) -> None:
    """The halving search against the full one on every run and method (see the docstring)."""
    opened = [open_run(r) for r in runs]
    for protocol in protocols:
        rows = []
        totals = {s: [0, 0.0] for s in SEARCHES}  # head-epochs, seconds
        diffs = []
        for m in methods:
            acc = {s: [] for s in SEARCHES}
            epochs = {s: 0 for s in SEARCHES}
            for run in opened:
                for search in SEARCHES:
                    p = plan(run, m, run.cfg.seed, protocol, search)  # type: ignore[arg-type]
                    t0 = time.perf_counter()
                    chosen = run_plan(run, p)
                    totals[search][1] += time.perf_counter() - t0
                    acc[search].append(test_accuracy(run, p, chosen))
                    epochs[search] += chosen.head_epochs
            for search in SEARCHES:
                totals[search][0] += epochs[search]
            full, halving = (100 * statistics.fmean(acc[s]) for s in ("full", "halving"))
            diffs.append(halving - full)
            ratio = epochs["full"] / epochs["halving"] if epochs["halving"] else 1.0
            rows.append([
                m, f"{full:.1f}", f"{halving:.1f}", f"{halving - full:+.1f}",
                str(epochs["full"]), str(epochs["halving"]), f"{ratio:.1f}x",
            ])  # fmt: skip
            print(f"{protocol} {m}: {rows[-1][1:]}", flush=True)
        (he_full, s_full), (he_halving, s_halving) = totals["full"], totals["halving"]
        rows.append([
            "all (mean)", "", "", f"{statistics.fmean(diffs):+.2f}", str(he_full),
            str(he_halving), f"{he_full / he_halving:.1f}x",
        ])  # fmt: skip
        header = ["method", "full %", "halving %", "halving - full", "full head-epochs",
                  "halving head-epochs", "fewer"]  # fmt: skip
        print(f"\n{protocol}: {len(runs)} runs, test top-1 accuracy of the kept head (mean over "
              f"the runs); full {s_full:.1f} s, halving {s_halving:.1f} s")  # fmt: skip
        print(fmt_table(rows, header))
        print()
        print(fmt_md(rows, header))


def replay(
    curves: list[list[tuple[float, float, float]]], rungs: list[tuple[int, int]]
) -> tuple[float, int]:
    """The test accuracy of the (configuration, epoch) a halving search with ``rungs`` keeps,
    from each configuration's (val accuracy, val NLL, test accuracy) per epoch, and the
    head-epochs it trains (the kept one's re-training for its test curve included)."""
    epochs = len(curves[0])

    def best(i: int, upto: int) -> tuple[ValScore, int]:
        e = ranked([ValScore(a, n) for a, n, _ in curves[i][:upto]])[0]
        return ValScore(*curves[i][e][:2]), e

    seen, alive = [epochs] * len(curves), list(range(len(curves)))
    for epoch, keep in rungs:
        stays = {alive[j] for j in ranked([best(i, epoch)[0] for i in alive])[:keep]}
        for i in alive:
            seen[i] = seen[i] if i in stays else epoch
        alive = sorted(stays)
    kept = ranked([best(i, seen[i])[0] for i in range(len(curves))])[0]
    return curves[kept][best(kept, seen[kept])[1]][2], sum(seen) + epochs


SCHEDULES = ((2, 10), (2, None), (3, 10), (3, None), (2, 5), (2, 3))  # eta, start (None: 1)


def replay_study(runs: list[Path], protocols: list[str], methods: list[str]) -> None:
    """Halving schedules replayed on the full search's curves (see the docstring)."""
    opened = [open_run(r) for r in runs]
    for protocol in protocols:
        curves = []
        for run in opened:
            for m in methods:
                p = plan(run, m, run.cfg.seed, protocol, "full")  # type: ignore[arg-type]
                if not p.recipe.retrains or len(p.candidates) < 2 or p.choose_on != "val":
                    continue
                results = run.problem.train_stopped(
                    p.method, list(p.candidates), on="val", fresh=p.recipe.init == "fresh",
                    record_test=True,
                )  # fmt: skip
                curves.append([[(e.val_accuracy, e.val_nll, e.test_accuracy) for e in r.history]
                               for r in results])  # fmt: skip
        rows = []
        for eta, start in SCHEDULES:
            diffs, full, trained = [], 0, 0
            with mock.patch.multiple(select_module, HALVING_ETA=eta, HALVING_START=start or 10**9):
                for c in curves:
                    f_acc, f_epochs = replay(c, [])
                    h_acc, h_epochs = replay(c, halving_rungs(len(c), len(c[0])))
                    diffs.append(100 * (h_acc - f_acc))
                    full, trained = full + f_epochs, trained + h_epochs
            rows.append([
                f"1/{eta} at E/{eta}^j", "epoch 1" if start is None else f"E/{start}",
                f"{statistics.fmean(diffs):+.2f}", f"{min(diffs):+.1f}", str(full), str(trained),
                f"{full / trained:.2f}x",
            ])  # fmt: skip
        header = ["kept at each rung", "first rung from", "mean change (points)", "worst",
                  "full head-epochs", "halving head-epochs", "fewer"]  # fmt: skip
        print(f"\n{protocol}: {len(curves)} searches ((method, run) pairs) replayed")
        print(fmt_table(rows, header))
        print()
        print(fmt_md(rows, header))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--searches", action="store_true", help="halving against full")
    ap.add_argument("--replay", action="store_true", help="halving schedules replayed")
    ap.add_argument("--protocols", default="paper,tuned")
    ap.add_argument("--methods", default=",".join(TABLE1), help="--searches/--replay's methods")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(run_header(args.threads, torch.__version__))
    if args.searches or args.replay:
        study = search_study if args.searches else replay_study
        study(args.runs, args.protocols.split(","), args.methods.split(","))
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
        return
    if len(args.runs) > 1:
        raise SystemExit("the protocols' timing takes one RUN (--searches takes several)")
    run = open_run(args.runs[0])
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
        seconds, trained = time_plans(run, plans)
        configs, heads, flops = floor_flops(run, plans, shared=True, done=trained)
        floor = flops / rate
        ref = speedup = "—"
        if name.startswith("compositions") and not args.skip_reference:
            with mock.patch.object(grid_module, "_training_key", each_alone):
                before, _ = time_plans(run, plans)
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
