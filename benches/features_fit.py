"""Benchmark: ``lort fit --dataset features`` on CIFAR-100-LT-sized features.

Writes synthetic features of the CIFAR-100-LT IR=100 shape (100 classes, n_i = floor(500 *
(1/100)^(i/99)), 10,847 training rows, 100 balanced test rows per class, 512-d, with the
mirrored view of every row) into ``OUT/data``, then times ``lort fit --dataset features``
end to end in a fresh process per repeat (import, loading and checking the arrays, the run
folder, stage 2, evaluation, the CE and logit-adjustment baselines, the report), and reports the
run's own stage-2 time from its report.json. Median over ``--repeats``.

The features are separable but noisy: class means drawn from N(0, 1) in 512-d, rows
``relu(mean + 2.5 * noise)``, so accuracy is neither trivial nor chance; the mirrored view adds
a small perturbation. Run (from the repository root, in the project's venv)::

    python benches/features_fit.py --out runs/bench-features [--repeats 3] [--smooth 0.98]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _tables import fmt_md, fmt_table  # benches/ is on sys.path when run as a script

SEED = 20_240_301
K, DIM, N_MAX, RATIO, TEST_PER_CLASS = 100, 512, 500, 100.0, 100
NOISE, FLIP_NOISE = 2.5, 0.1


def write_features(root: Path) -> dict[str, int]:
    """The synthetic arrays (see the module docstring); their sizes."""
    rng = np.random.default_rng(SEED)
    counts = np.floor(N_MAX * (1 / RATIO) ** (np.arange(K) / (K - 1))).astype(np.int64)
    means = rng.normal(size=(K, DIM)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, per_class in (("train", counts), ("test", np.full(K, TEST_PER_CLASS))):
        labels = np.repeat(np.arange(K), per_class)
        plain = means[labels] + NOISE * rng.normal(size=(labels.size, DIM)).astype(np.float32)
        mirror = plain + FLIP_NOISE * rng.normal(size=plain.shape).astype(np.float32)
        np.save(root / f"{split}_features.npy", np.maximum(plain, 0).astype(np.float32))
        np.save(root / f"{split}_flipped_features.npy", np.maximum(mirror, 0).astype(np.float32))
        np.save(root / f"{split}_labels.npy", labels)
        sizes[split] = int(labels.size)
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-features"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smooth", default="0.98", help="LORT's delta, or auto")
    args = ap.parse_args()
    data = args.out / "data"
    sizes = write_features(data)
    print(f"features: {sizes['train']:,} train x {DIM}, {sizes['test']:,} test, K = {K}")
    print(f"command: python {' '.join(map(shlex.quote, sys.argv))}; load {os.getloadavg()}")
    walls, stage1, stage2 = [], [], []
    for i in range(args.repeats):
        run = args.out / f"run{i}"
        cmd = [sys.executable, "-m", "lort", "fit", "--dataset", "features"]
        cmd += ["--data-root", str(data), "--smooth", args.smooth, "--out", str(run), "--overwrite"]
        started = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - started)
        report = json.loads((run / "report.json").read_text())
        stage1.append(report["timings"]["stage1_s"])
        stage2.append(report["timings"]["stage2_s"])
        acc = report["results"]["overall"]["accuracy"]
    print(f"    {shlex.join(cmd)}")
    header = ["measure", "runs", "median s", "min s", "max s"]
    rows = [
        [name, str(len(xs)), f"{statistics.median(xs):.2f}", f"{min(xs):.2f}", f"{max(xs):.2f}"]
        for name, xs in (
            ("lort fit, whole process", walls),
            ("stage 1: linear CE head (report)", stage1),
            ("stage 2: LORT re-training (report)", stage2),
        )
    ]
    print(fmt_table(rows, header))
    print(f"test accuracy {100 * acc:.2f}% (the last run); load {os.getloadavg()}")
    print(fmt_md(rows, header))


if __name__ == "__main__":
    main()
