"""Benchmark: lort's user path on features at the paper's shapes, against the GEMM floor and
scikit-learn, with the peak memory of every step.

Writes synthetic long-tailed features in the ``features`` layout (``train/val/test_features.npy``,
``*_flipped_features.npy``, ``*_labels.npy``; README, "your own features") at each size:

* ``cifar100-lt-64`` / ``cifar100-lt-512``: K = 100, n_i = floor(500 * 0.01^(i/99)) (10,847
  rows), 20 validation and 100 test rows per class, D = 64 / 512;
* ``imagenet-lt``: K = 1,000, 115,846 rows from 1,280 down to 5 per class, 20 validation and 50
  test rows per class, D = 2,048;
* ``inat2018``: K = 8,142, 437,513 rows from 1,000 down to 2 per class, 2 validation and 3 test
  rows per class, D = 2,048 (7.2 GB of float32 training features with the mirrored view);
* ``k1000-64``: K = 1,000, 28,962 rows from 320 down to 2 per class (ImageNet-LT's divided by
  four), 20 validation and 50 test rows per class, D = 64: a K = 1,000 set on which a CPU can
  run the full search beside the halving one (``benches/compare_protocols.py --searches``).

The profiles between the published extremes are ``floor(max * (min/max)^((i/(K-1))^p))`` with
``p`` chosen so that the rows add up to the published total. Rows are ``relu(mean_y + 2.5 *
noise)`` with class means drawn from N(0, 1), the mirrored view a small perturbation.

Then, each in a fresh process timed to its end with its peak RSS (``/usr/bin/time``'s) and
its peak anonymous RSS (sampled from /proc every 0.2 s: the part that is copies, not mapped
files, which the kernel can drop), in this order: ``lort fit --dataset features`` (default
settings, or ``--fit-args``), ``lort compare --protocol paper`` and ``tuned`` (``--seeds 1``,
``--methods``), ``lort keep``, ``lort predict`` on the test features, ``lort analyze`` on the
run's logits, and scikit-learn's ``LogisticRegression(class_weight="balanced")`` on the same
training arrays (the plain view). A command still running after ``--timeout`` seconds is stopped
and marked so (its peak memory up to then is reported).

The floor: one head-epoch (the forward product and the weight gradient over the n training
rows, 4 n D K flops) at the best float32 GEMM rate measured in the same run (on the stage-2
step's shape, batch x D by D x K, and on a 1024^3 product: ``stage2_grid.gemm_rate``); each
command's time is also given in head-epochs of that floor. ``--steps N`` also times N steps of
lort's stage-2 loop (``train_head_cached``, one head) at the size's shape in this process and
extrapolates them to one head-epoch, marked ``extrapolated``: where the 2-core CPU cannot
finish a command, that is the number to read.

Run (from the repository root, in the project's venv)::

    python benches/scale.py --sizes cifar100-lt-64,cifar100-lt-512 --out runs/scale
    python benches/scale.py --sizes inat2018 --only fit --fit-args="--epochs1 1 --epochs2 1" \\
        --timeout 300 --steps 20 --out runs/scale
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from _tables import fmt_md, fmt_table, run_header  # benches/ is on sys.path when run as a script
from stage2_grid import gemm_rate

SEED = 20_261_207
NOISE, FLIP_NOISE = 2.5, 0.1
STEPS = ("fit", "paper", "tuned", "keep", "predict", "analyze", "sklearn")
STAGE2_BATCH = 64  # the features recipe's stage-2 batch (lort.config DEFAULTS["features"])


@dataclass(frozen=True)
class Size:
    k: int
    dim: int
    n_max: int
    n_min: int
    total: int
    val: int
    test: int

    def counts(self) -> np.ndarray:
        """Training rows per class: the published extremes and total (see the docstring)."""
        t = np.arange(self.k) / (self.k - 1)
        ratio = self.n_min / self.n_max

        def rows(p: float) -> np.ndarray:
            return self.n_max * ratio ** (t**p)

        lo, hi = 0.01, 100.0
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if np.floor(rows(mid)).sum() > self.total else (mid, hi)
        exact = rows(lo)
        counts = np.floor(exact).astype(np.int64)
        short = self.total - int(counts.sum())
        if short > 0:  # the rows the floors dropped: to the largest fractional parts
            counts[np.argsort(counts - exact)[:short]] += 1
        return np.sort(counts)[::-1]


SIZES = {
    "cifar100-lt-64": Size(100, 64, 500, 5, 10_847, 20, 100),
    "cifar100-lt-512": Size(100, 512, 500, 5, 10_847, 20, 100),
    "imagenet-lt": Size(1_000, 2_048, 1_280, 5, 115_846, 20, 50),
    "inat2018": Size(8_142, 2_048, 1_000, 2, 437_513, 2, 3),
    # K = 1,000 small enough for a CPU to run both searches: ImageNet-LT's extremes and total
    # divided by four, 64-d
    "k1000-64": Size(1_000, 64, 320, 2, 28_962, 20, 50),
}


def cifar_counts() -> np.ndarray:
    return np.floor(500 * 0.01 ** (np.arange(100) / 99)).astype(np.int64)


def counts_of(name: str, size: Size) -> np.ndarray:
    return cifar_counts() if name.startswith("cifar100") else size.counts()


def write_data(root: Path, name: str, size: Size) -> dict[str, int]:
    """The synthetic arrays in the ``features`` layout, written block by block (reused when
    ``root`` already holds them for this size)."""
    stamp = root / "size.json"
    want = {"name": name, **size.__dict__, "seed": SEED}
    if stamp.is_file() and json.loads(stamp.read_text()).get("size") == want:
        return json.loads(stamp.read_text())["rows"]
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    means = rng.normal(size=(size.k, size.dim)).astype(np.float32)
    per_split = {
        "train": counts_of(name, size),
        "val": np.full(size.k, size.val),
        "test": np.full(size.k, size.test),
    }
    block = max(1, (32 << 20) // (4 * size.dim))
    rows = {}
    for split, per_class in per_split.items():
        labels = np.repeat(np.arange(size.k), per_class)
        np.save(root / f"{split}_labels.npy", labels)
        n = labels.size
        plain = np.lib.format.open_memmap(
            root / f"{split}_features.npy", "w+", np.float32, (n, size.dim)
        )
        mirror = np.lib.format.open_memmap(
            root / f"{split}_flipped_features.npy", "w+", np.float32, (n, size.dim)
        )
        for s in range(0, n, block):
            y = labels[s : s + block]
            x = means[y] + NOISE * rng.standard_normal((y.size, size.dim), np.float32)
            plain[s : s + y.size] = np.maximum(x, 0)
            x += FLIP_NOISE * rng.standard_normal(x.shape, np.float32)
            mirror[s : s + y.size] = np.maximum(x, 0)
        plain.flush()
        mirror.flush()
        del plain, mirror
        rows[split] = int(n)
    stamp.write_text(json.dumps({"size": want, "rows": rows}))
    return rows


@dataclass
class Timed:
    wall_s: float
    peak_rss_mib: float
    peak_anon_mib: float
    stopped: bool
    rc: int
    tail: str


def _memory_kib(pid: int) -> tuple[int, int]:
    """RssAnon and VmHWM (peak RSS so far) of ``pid``'s children (the command under
    /usr/bin/time), in KiB."""
    found = {"RssAnon:": 0, "VmHWM:": 0}
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                key = line.split(maxsplit=1)[0] if line else ""
                if key in found:
                    found[key] += int(line.split()[1])
    except (OSError, ValueError):
        pass
    return found["RssAnon:"], found["VmHWM:"]


def timed(cmd: list[str], timeout: float, log: Path) -> Timed:
    """``cmd`` in a fresh process: wall time, peak RSS (/usr/bin/time's, not wait4's here: a
    child forked from this process starts its peak at this process's RSS), peak anonymous RSS
    (sampled)."""
    peak = log.with_suffix(".rss")
    with open(log, "w") as out:
        t0 = time.perf_counter()
        timed_cmd = ["/usr/bin/time", "-f", "%M", "-o", str(peak), *cmd]
        proc = subprocess.Popen(
            timed_cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        peak_anon, peak_rss = [0], [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                anon, hwm = _memory_kib(proc.pid)
                peak_anon[0], peak_rss[0] = max(peak_anon[0], anon), max(peak_rss[0], hwm)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        stopped = False
        deadline = t0 + timeout
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline and not stopped:
                stopped = True
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        done.set()
        watcher.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    tail = " | ".join(log.read_text().strip().splitlines()[-2:])[-300:]
    lines = peak.read_text().split() if peak.is_file() else []
    rss_kib = int(lines[-1]) if lines and lines[-1].isdigit() else 0  # none when killed
    rss_kib = max(rss_kib, peak_rss[0])
    return Timed(wall, rss_kib / 1024, peak_anon[0] / 1024, stopped, proc.returncode, tail)


def lort(*args: object) -> list[str]:
    return [sys.executable, "-m", "lort", *map(str, args)]


def sklearn_child(data: Path, max_iter: int) -> None:
    """(child mode) scikit-learn's balanced logistic regression on the plain training view;
    prints its fit seconds, iterations and test class-mean accuracy as JSON."""
    from sklearn.linear_model import LogisticRegression

    x = np.load(data / "train_features.npy", mmap_mode="r")
    y = np.load(data / "train_labels.npy")
    t0 = time.perf_counter()
    clf = LogisticRegression(class_weight="balanced", max_iter=max_iter).fit(x, y)
    fit_s = time.perf_counter() - t0
    xt, yt = np.load(data / "test_features.npy", mmap_mode="r"), np.load(data / "test_labels.npy")
    hit = clf.predict(xt) == yt
    acc = float(np.mean([hit[yt == c].mean() for c in np.unique(yt)]))
    print(json.dumps({"fit_s": fit_s, "n_iter": int(np.max(clf.n_iter_)), "accuracy": acc}))


def step_time(size: Size, counts: np.ndarray, steps: int) -> float:
    """Seconds per step of lort's stage-2 loop (one LORT head, no flips) at ``size``'s shape,
    over ``steps`` steps on as many rows."""
    from lort.methods import get_method
    from lort.optim import StageConfig
    from lort.stage2.loop import train_head_cached

    n = steps * STAGE2_BATCH
    gen = torch.Generator().manual_seed(0)
    feats = torch.rand(n, size.dim, generator=gen)
    labels = torch.randint(0, size.k, (n,), generator=gen)
    init = torch.nn.Linear(size.dim, size.k)
    st = StageConfig(epochs=1, lr=5e-4, weight_decay=0.0, batch_size=STAGE2_BATCH)
    method = get_method("lort")
    train_head_cached(method, feats[: 2 * STAGE2_BATCH], None, labels[: 2 * STAGE2_BATCH],
                      counts, init, st, smooth=0.9, seed=0)  # fmt: skip
    t0 = time.perf_counter()
    train_head_cached(method, feats, None, labels, counts, init, st, smooth=0.9, seed=0)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="cifar100-lt-64,cifar100-lt-512", help=", ".join(SIZES))
    ap.add_argument("--out", type=Path, default=Path("runs/scale"))
    ap.add_argument("--only", default=",".join(STEPS), help="which of " + ", ".join(STEPS))
    ap.add_argument("--methods", default="lort,ce", help="lort compare/keep --methods")
    ap.add_argument("--fit-args", default="", help="extra `lort fit` options")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per command")
    ap.add_argument("--steps", type=int, default=0, help="also time N stage-2 steps")
    ap.add_argument("--sklearn-iter", type=int, default=100, help="LogisticRegression max_iter")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sklearn-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sklearn_child is not None:
        sklearn_child(args.sklearn_child, args.sklearn_iter)
        return
    torch.set_num_threads(args.threads)
    only = args.only.split(",")
    print(run_header(args.threads, torch.__version__))
    results = {}
    for name in args.sizes.split(","):
        size = SIZES[name]
        counts = counts_of(name, size)
        root = args.out / name
        t0 = time.perf_counter()
        rows = write_data(root / "data", name, size)
        print(f"\n{name}: K = {size.k}, D = {size.dim}, rows {rows} (max {counts.max()}, "
              f"min {counts.min()}), data {time.perf_counter() - t0:.1f} s")  # fmt: skip
        x = torch.rand(STAGE2_BATCH, size.dim)
        w = torch.rand(size.dim, size.k)
        big = torch.rand(1024, 1024)
        rates = gemm_rate([(f"{STAGE2_BATCH}x{size.dim} @ {size.dim}x{size.k}", x, w),
                           ("1024^3", big, big)])  # fmt: skip
        rate = max(r for _, r in rates)
        n = rows["train"]
        head_epoch = 4 * n * size.dim * size.k / (rate * 1e9)
        for gemm, r in rates:
            print(f"  gemm {gemm}: {r:.1f} GFLOP/s")
        print(f"  floor of one head-epoch (4 n D K at {rate:.1f} GFLOP/s): {head_epoch:.3f} s")
        data, run = root / "data", root / "run"
        env = {"OMP_NUM_THREADS": str(args.threads)}
        os.environ.update(env)
        commands = {
            "fit": lort("fit", "--dataset", "features", "--data-root", data, "--out", run,
                        "--overwrite", *shlex.split(args.fit_args)),
            "paper": lort("compare", run, "--protocol", "paper", "--seeds", 1,
                          "--methods", args.methods),
            "tuned": lort("compare", run, "--protocol", "tuned", "--seeds", 1,
                          "--methods", args.methods),
            "keep": lort("keep", run, "--protocol", "tuned", "--methods", args.methods),
            "predict": lort("predict", run, data / "test_features.npy", "--format", "csv",
                            "--out", root / "predictions.csv"),
            "analyze": lort("analyze", run / "logits.npy", "--labels", run / "labels.npy",
                            "--train-counts", run / "train_counts.npy"),
            "sklearn": [sys.executable, __file__, "--sklearn-child", str(data),
                        "--sklearn-iter", str(args.sklearn_iter)],
        }  # fmt: skip
        table = []
        record: dict[str, object] = {"rows": rows, "gemm": rates, "head_epoch_floor_s": head_epoch}
        for step in (s for s in STEPS if s in only):
            t = timed(commands[step], args.timeout, root / f"{step}.log")
            note = "stopped at the timeout" if t.stopped else ("" if t.rc == 0 else f"rc {t.rc}")
            if step == "sklearn" and t.rc == 0 and not t.stopped:
                sk = json.loads(t.tail.split(" | ")[-1])
                note = (f"{sk['n_iter']} iterations, fit {sk['fit_s']:.1f} s, test class-mean "
                        f"accuracy {100 * sk['accuracy']:.1f}%")  # fmt: skip
            if step == "fit" and t.rc == 0 and not t.stopped:
                report = json.loads((run / "report.json").read_text())
                acc = report["results"]["overall"]["balanced_accuracy"]
                note = f"test class-mean accuracy {100 * acc:.1f}%; " + ", ".join(
                    f"{k} {v:.1f}" for k, v in report["timings"].items() if k.endswith("_s")
                )
            table.append([
                step, f"{t.wall_s:.1f}", f"{t.wall_s / head_epoch:.3g}",
                f"{t.peak_rss_mib:.0f}", f"{t.peak_anon_mib:.0f}", note,
            ])  # fmt: skip
            print(f"  {step}: {table[-1][1:]}  ({shlex.join(map(str, commands[step]))})",
                  flush=True)  # fmt: skip
            record[step] = t.__dict__
        if args.steps:
            per_step = step_time(size, counts, args.steps)
            epoch = per_step * math.ceil(n / STAGE2_BATCH)
            table.append([
                f"{args.steps} stage-2 steps -> one head-epoch (extrapolated)",
                f"{epoch:.1f}", f"{epoch / head_epoch:.1f}", "", "",
                f"{1e3 * per_step:.2f} ms per step of {STAGE2_BATCH} rows",
            ])  # fmt: skip
            record["head_epoch_extrapolated_s"] = epoch
            print(f"  steps: {table[-1][1:]}", flush=True)
        header = ["step", "wall s", "head-epochs of floor", "peak RSS MiB", "peak anon MiB",
                  "notes"]  # fmt: skip
        print(fmt_table(table, header))
        print()
        print(fmt_md(table, header))
        results[name] = record
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    (args.out / "scale.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
