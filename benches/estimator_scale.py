"""Benchmark: ``LortClassifier().fit`` on 50,000 x 512 long-tailed features, K = 100, against
scikit-learn's ``LogisticRegression(class_weight="balanced")`` on the same arrays, in one run.

The features are synthetic: K class means drawn from N(0, 1) in D dimensions, rows
``relu(mean + 2.5 * noise)`` (as benches/features_fit.py), training counts
``n_i = n_max * (1 / 100)^(i / (K - 1))`` scaled to ``--rows`` in all, 20 validation and 50
test rows per class. Both estimators fit once, in this process, one after the other (lort
with the validation split, LogisticRegression on the training rows with its defaults), after
an untimed warm-up fit that imports torch. The script prints each fit's wall and CPU time (all
threads of the process: on a shared machine, the less noisy of the two), test accuracy and
class-mean accuracy, the ratios of the times, where lort's time went (``report_["timings"]``),
and the arithmetic floor of each stage: the head-epochs it trained times their two products,
at the 1024^3 product's rate in CPU time measured in the same run (with ``OMP_NUM_THREADS=1``
the stage times are one thread's, as the rate is). Run (from the repository root, in the
project's venv)::

    OMP_NUM_THREADS=1 python benches/estimator_scale.py [--rows 50000] [--dim 512] \\
        [--classes 100] [--profile]

``--profile`` runs lort's fit under cProfile (its times include the profiler's overhead) and
prints the 20 functions with the most own time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shlex
import sys
import time
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from _tables import fmt_md, fmt_table  # benches/ is on sys.path when run as a script
from stage2_step_profile import cpu_gemm_rate

SEED = 20_261_207
RATIO, NOISE, VAL_PER_CLASS, TEST_PER_CLASS = 100.0, 2.5, 20, 50


def make_features(rows: int, dim: int, k: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(train, val, test) as (features, labels), as the module docstring says."""
    rng = np.random.default_rng(SEED)
    profile = RATIO ** (-np.arange(k) / (k - 1))
    counts = np.maximum(1, np.floor(rows * profile / profile.sum())).astype(np.int64)
    means = rng.normal(size=(k, dim)).astype(np.float32)
    out = []
    for per_class in (counts, np.full(k, VAL_PER_CLASS), np.full(k, TEST_PER_CLASS)):
        labels = np.repeat(np.arange(k), per_class)
        noise = rng.normal(size=(labels.size, dim)).astype(np.float32)
        out.append((np.maximum(means[labels] + NOISE * noise, 0), labels))
    return tuple(out)


def floor(report: dict[str, Any], rows: int, dim: int, k: int, logreg_s: float) -> None:
    """The arithmetic the fit's two stages did (its head-epochs, read from its report, each
    two products of rows x dim by dim x k: the forward and the weight gradient) at the
    measured GEMM rate, against lort's stage times and LogisticRegression's fit."""
    config = report["config"]
    stage1 = config["stage1"]["epochs"]
    epochs2 = config["stage2"]["epochs"]
    searched = len(report["smooth"]["grid"]) if report["smooth"]["mode"] == "auto" else 0
    if report["hyper"].get("mode") == "auto":
        searched += len(report["hyper"]["values"])
    stage2 = (searched + 1) * epochs2  # the searched heads, then the kept one trained again
    per_epoch = 2 * 2 * rows * dim * k
    big = torch.randn(1024, 1024)
    rate = cpu_gemm_rate(big, big)
    floor1, floor2 = stage1 * per_epoch / rate / 1e9, stage2 * per_epoch / rate / 1e9
    t = report["timings"]
    print(
        f"arithmetic floor at {rate:.0f} GFLOP/s (1024^3, CPU time): stage 1 {stage1} "
        f"head-epochs {floor1:.1f} s (took {t['stage1_s']:.1f} s, {t['stage1_s'] / floor1:.2f}x), "
        f"stage 2 {stage2} head-epochs {floor2:.1f} s (took {t['stage2_s']:.1f} s, "
        f"{t['stage2_s'] / floor2:.2f}x); the two floors are {(floor1 + floor2) / logreg_s:.1f}x "
        "LogisticRegression's fit"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--method", default="lort", help="LortClassifier's method")
    ap.add_argument("--profile", action="store_true", help="cProfile lort's fit (its top 20)")
    args = ap.parse_args()
    import lort

    (x, y), (xv, yv), (xt, yt) = make_features(args.rows, args.dim, args.classes)
    counts = np.bincount(y)
    print(
        f"features: {len(y):,} train x {args.dim}, {len(yv):,} val, {len(yt):,} test, "
        f"K = {args.classes} (max {counts.max()}, min {counts.min()})"
    )
    print(f"command: python {shlex.join(sys.argv)}; load {os.getloadavg()}")
    # A first fit imports torch and its optimiser (seconds, once per process): not timed.
    started = time.perf_counter()
    few = np.concatenate([np.flatnonzero(yv == c)[:2] for c in range(args.classes)])
    lort.LortClassifier(method="ce", epochs1=1, epochs2=1).fit(xv[few], yv[few])
    print(f"warm-up fit (imports, untimed below): {time.perf_counter() - started:.1f} s")

    started, cpu = time.perf_counter(), time.process_time()
    prof = cProfile.Profile() if args.profile else None
    if prof is not None:
        prof.enable()
    clf = lort.LortClassifier(method=args.method).fit(x, y, xv, yv)
    if prof is not None:
        prof.disable()
    lort_s, lort_cpu = time.perf_counter() - started, time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    logreg = LogisticRegression(class_weight="balanced").fit(x, y)
    logreg_s, logreg_cpu = time.perf_counter() - started, time.process_time() - cpu

    header = ["estimator", "fit s", "CPU s", "test accuracy %", "class-mean %"]
    rows = []
    for name, est, secs, cpu_s in (
        (f'LortClassifier(method="{args.method}")', clf, lort_s, lort_cpu),
        ('LogisticRegression(class_weight="balanced")', logreg, logreg_s, logreg_cpu),
    ):
        pred = est.predict(xt)
        acc, bal = np.mean(pred == yt), balanced_accuracy_score(yt, pred)
        rows.append([name, f"{secs:.1f}", f"{cpu_s:.1f}", f"{100 * acc:.2f}", f"{100 * bal:.2f}"])
    print(fmt_table(rows, header))
    print(
        f"ratio lort / LogisticRegression: wall {lort_s / logreg_s:.2f}x, CPU (all threads) "
        f"{lort_cpu / logreg_cpu:.2f}x; load {os.getloadavg()}"
    )
    timings = clf.report_["timings"]
    print("lort's time: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    floor(clf.report_, len(y), args.dim, args.classes, logreg_s)
    print(fmt_md(rows, header))
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
