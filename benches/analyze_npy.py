"""Benchmark: streaming per-class logit statistics over a ``.npy`` file.

Compares ``lort._core.analyze_npy`` (pread + Rust workers) against a chunked,
multi-threaded float64 numpy reference and a torch (CPU) reference that compute
the same statistics: per-class positive / negative means and standard
deviations (hence the Logits Magnitude), per-class argmax accuracy and the
logsumexp NLL. A second, small benchmark times ``hessian='exact'`` on rows held
in memory.

Run (from the repository root, with the extension built into the venv)::

    python benches/analyze_npy.py [--sizes 1000000x1000,200000x8142,24426x8142]
        [--dir runs/bench] [--repeats 3] [--threads 2]
        [--only read,lort,numpy,torch,exact] [--json OUT]

What it does, per size N x K:

* writes synthetic long-tailed logits (float32 .npy, written in chunks, never
  held whole), balanced test labels (int64 .npy) and long-tailed train counts
  (n_i proportional to 0.01^(i/(K-1))) under ``--dir``; a logits file of the
  right name and size is reused;
* runs every method in a fresh subprocess, so that the reported peak RSS
  (``VmHWM``) belongs to that method alone; each child first warms the page
  cache by reading the file once with 1 MiB ``readinto`` calls, then times
  ``--repeats`` runs and reports the median (numpy / torch stop early once
  their runs exceed ``--ref-budget`` seconds; the ``runs`` column shows how
  many were timed);
* checks lort against the numpy reference (per-class magnitude, accuracy, NLL)
  and prints the largest absolute differences.

What it prints: the CPU model, thread count and exact command line; then per
size a table of method, median seconds, GB/s of file data, the ratio to the
best numpy variant (numpy seconds / method seconds, above 1 is faster), the
median CPU seconds (user + sys, all threads) of a run, peak RSS in MiB and the
lort memory budget 64 MiB + 9 bytes x N; the exact-Hessian table; and finally
the same results as Markdown tables for the README. CPU seconds well below
threads x wall seconds mean the run waited (I/O, or other load on the machine:
the load average is printed before and after each size).

Methods (``--only``): ``read`` (the floor: only the pread of the file, in
``--threads`` threads), ``lort`` (hessian='none' and hessian='bound'),
``numpy`` (one row per ``--numpy-chunks-mb`` chunk size; the best is marked),
``torch`` (``torch.set_num_threads(--threads)``), ``exact`` (the in-memory
exact-Hessian benchmark at ``--exact-size``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from _tables import fmt_md, fmt_table  # benches/ is on sys.path when run as a script

SEED = 20_240_301
IMBALANCE = 100  # train counts fall from N_MAX_TRAIN to N_MAX_TRAIN / IMBALANCE
N_MAX_TRAIN = 1000
MARGIN = 4.0  # added to the true-class logit
BIAS_SPAN = 1.0  # per-class bias runs from +BIAS_SPAN (head) to -BIAS_SPAN (tail)
GEN_CHUNK_BYTES = 32 << 20
WARM_BLOCK = 1 << 20
MIB = 1 << 20
CHILD_MARK = "@@RESULT@@ "
DEFAULT_SIZES = "1000000x1000,200000x8142,24426x8142"
ALL_METHODS = ("read", "lort", "numpy", "torch", "exact")


# --------------------------------------------------------------------------- data


def parse_size(text: str) -> tuple[int, int]:
    n, k = text.lower().split("x")
    return int(n), int(k)


def files_for(root: Path, n: int, k: int) -> dict[str, Path]:
    stem = f"logits_{n}x{k}_s{SEED}"
    return {
        "logits": root / f"{stem}.npy",
        "labels": root / f"{stem}.labels.npy",
        "train_counts": root / f"{stem}.train_counts.npy",
    }


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": shape,
    }
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def data_offset(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        assert not fortran, f"{path} is Fortran-ordered"
        return f.tell(), shape, dtype


def class_bias(k: int) -> np.ndarray:
    """Head classes (small index) get larger logits."""
    frac = np.arange(k, dtype=np.float64) / max(k - 1, 1)
    return (BIAS_SPAN * (1.0 - 2.0 * frac)).astype(np.float32)


def train_counts(k: int) -> np.ndarray:
    frac = np.arange(k, dtype=np.float64) / max(k - 1, 1)
    counts = np.round(N_MAX_TRAIN * (1.0 / IMBALANCE) ** frac)
    return np.maximum(counts, 1).astype(np.int64)


def test_labels(n: int, k: int) -> np.ndarray:
    """Balanced-ish test labels: uniform over the classes."""
    return np.random.default_rng([SEED, n, k, 1]).integers(0, k, n, dtype=np.int64)


def logits_chunk(n: int, k: int, r0: int, r1: int, labels: np.ndarray, bias: np.ndarray):
    """Rows [r0, r1): Gaussian noise + class bias + MARGIN on the true class.
    Each chunk has its own seeded generator, so the file is the same whatever
    the thread count."""
    rng = np.random.default_rng([SEED, n, k, 2, r0])
    z = np.empty((r1 - r0, k), dtype=np.float32)
    rng.standard_normal(dtype=np.float32, out=z)
    z += bias
    z[np.arange(r1 - r0), labels[r0:r1]] += np.float32(MARGIN)
    return z


def in_memory_logits(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    labels = test_labels(n, k)
    bias = class_bias(k)
    step = max(1, GEN_CHUNK_BYTES // (4 * k))
    z = np.empty((n, k), dtype=np.float32)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        z[r0:r1] = logits_chunk(n, k, r0, r1, labels, bias)
    return z, labels


def ensure_data(root: Path, n: int, k: int, threads: int) -> tuple[dict[str, Path], str]:
    """Writes (or reuses) the logits, labels and train counts of one size."""
    paths = files_for(root, n, k)
    labels = test_labels(n, k)
    np.save(paths["labels"], labels)
    np.save(paths["train_counts"], train_counts(k))
    header = npy_header((n, k), np.dtype("<f4"))
    expected = len(header) + 4 * n * k
    path = paths["logits"]
    if path.exists() and path.stat().st_size == expected:
        _, shape, dtype = data_offset(path)
        if shape == (n, k) and dtype == np.dtype("<f4"):
            return paths, "reused"
    bias = class_bias(k)
    step = max(1, GEN_CHUNK_BYTES // (4 * k))
    starts = list(range(0, n, step))
    tmp = path.with_suffix(".npy.partial")
    t0 = time.perf_counter()
    with open(tmp, "wb") as f, ThreadPoolExecutor(threads) as pool:
        f.write(header)
        pending: deque = deque()
        for r0 in starts:
            pending.append(pool.submit(logits_chunk, n, k, r0, min(n, r0 + step), labels, bias))
            if len(pending) > threads:
                f.write(memoryview(pending.popleft().result().reshape(-1)).cast("B"))
        while pending:
            f.write(memoryview(pending.popleft().result().reshape(-1)).cast("B"))
    os.replace(tmp, path)
    secs = time.perf_counter() - t0
    return paths, f"written in {secs:.1f} s ({4 * n * k / secs / 1e9:.2f} GB/s)"


# ------------------------------------------------------------------- measurement


def read_exact(f, offset: int, out: np.ndarray) -> None:
    view = memoryview(out.reshape(-1)).cast("B")
    f.seek(offset)
    got = 0
    while got < len(view):
        r = f.readinto(view[got:])
        if not r:
            raise EOFError(f"short read at byte {offset + got}")
        got += r


def warm_cache(path: Path) -> float:
    """Reads the whole file once through a 1 MiB buffer; returns seconds."""
    buf = bytearray(WARM_BLOCK)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t0


def chunk_rows(k: int, chunk_mb: float) -> int:
    return max(1, int(chunk_mb * MIB) // (4 * k))


def read_only_pass(path: Path, n: int, k: int, threads: int, chunk_mb: float) -> dict:
    offset, _, _ = data_offset(path)
    rows = chunk_rows(k, chunk_mb)
    starts = list(range(0, n, rows))

    def worker(t: int) -> None:
        buf = np.empty(rows * k, dtype=np.float32)
        with open(path, "rb", buffering=0) as f:
            for ci in range(t, len(starts), threads):
                r0 = starts[ci]
                r1 = min(n, r0 + rows)
                read_exact(f, offset + 4 * r0 * k, buf[: (r1 - r0) * k])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return {}


def reference_from_sums(n: int, shift: np.ndarray, acc: dict) -> dict:
    """Per-class statistics from shifted sums (shift = row 0 of the file)."""
    pn = acc["pn"].astype(np.float64)
    nn = n - pn
    with np.errstate(invalid="ignore", divide="ignore"):
        pm = acc["p1"] / pn
        nm = (acc["s1"] - acc["p1"]) / nn
        pos_var = acc["p2"] / pn - pm * pm
        neg_var = (acc["s2"] - acc["p2"]) / nn - nm * nm
        pos_mean = shift + pm
        neg_mean = shift + nm
        accuracy = acc["correct"] / pn
    return {
        "pos_mean": pos_mean,
        "neg_mean": neg_mean,
        "pos_std": np.sqrt(np.maximum(pos_var, 0.0)),
        "neg_std": np.sqrt(np.maximum(neg_var, 0.0)),
        "magnitude": pos_mean - neg_mean,
        "accuracy": accuracy,
        "nll": np.array(acc["nll"] / n),
        "overall_accuracy": np.array(acc["correct"].sum() / n),
    }


def numpy_pass(
    path: Path, n: int, k: int, labels: np.ndarray, threads: int, chunk_mb: float
) -> dict:
    """The numpy reference: `threads` workers take alternate row chunks, read
    them with readinto into their own float32 buffer and accumulate in float64."""
    offset, _, _ = data_offset(path)
    rows = chunk_rows(k, chunk_mb)
    starts = list(range(0, n, rows))
    shift = np.empty(k, dtype=np.float32)
    with open(path, "rb", buffering=0) as f:
        read_exact(f, offset, shift)
    shift = shift.astype(np.float64)

    def worker(t: int) -> dict:
        acc = {name: np.zeros(k) for name in ("s1", "s2", "p1", "p2")} | {
            name: np.zeros(k, dtype=np.int64) for name in ("pn", "correct", "predicted")
        }
        acc["nll"] = 0.0
        b32 = np.empty(rows * k, dtype=np.float32)
        b64 = np.empty(rows * k, dtype=np.float64)
        with open(path, "rb", buffering=0) as f:
            for ci in range(t, len(starts), threads):
                r0 = starts[ci]
                r1 = min(n, r0 + rows)
                m_rows = r1 - r0
                z = b32[: m_rows * k].reshape(m_rows, k)
                d = b64[: m_rows * k].reshape(m_rows, k)
                read_exact(f, offset + 4 * r0 * k, z)
                y = labels[r0:r1]
                ar = np.arange(m_rows)
                # Shifted column sums and sums of squares (all rows).
                np.subtract(z, shift, out=d)
                acc["s1"] += d.sum(axis=0)
                dy = d[ar, y]
                np.square(d, out=d)
                acc["s2"] += d.sum(axis=0)
                # Positives: the label column of each row.
                acc["p1"] += np.bincount(y, weights=dy, minlength=k)
                acc["p2"] += np.bincount(y, weights=dy * dy, minlength=k)
                acc["pn"] += np.bincount(y, minlength=k)
                # Argmax accuracy and logsumexp NLL.
                am = z.argmax(axis=1)
                zmax = z[ar, am]
                acc["predicted"] += np.bincount(am, minlength=k)
                acc["correct"] += np.bincount(y[am == y], minlength=k)
                np.subtract(z, zmax[:, None], out=d, dtype=np.float64)
                np.exp(d, out=d)
                lse = np.log(d.sum(axis=1)) + zmax
                acc["nll"] += float((lse - z[ar, y]).sum())
        return acc

    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(worker, range(threads)))
    total = parts[0]
    for p in parts[1:]:
        for key, value in p.items():
            total[key] = total[key] + value
    return reference_from_sums(n, shift, total)


def torch_pass(
    path: Path, n: int, k: int, labels: np.ndarray, threads: int, chunk_mb: float
) -> dict:
    """The torch reference: one driver thread (torch's intra-op pool does the
    math in `threads` threads), reading the next chunk in a helper thread
    while the current one is processed."""
    import torch

    offset, _, _ = data_offset(path)
    rows = chunk_rows(k, chunk_mb)
    starts = list(range(0, n, rows))
    first = np.empty(k, dtype=np.float32)
    with open(path, "rb", buffering=0) as f:
        read_exact(f, offset, first)
    shift_np = first.astype(np.float64)
    shift = torch.from_numpy(shift_np)
    labels_t = torch.from_numpy(labels)
    f64 = torch.float64
    s1, s2, p1, p2 = (torch.zeros(k, dtype=f64) for _ in range(4))
    pn, correct, predicted = (torch.zeros(k, dtype=torch.int64) for _ in range(3))
    nll = torch.zeros((), dtype=f64)
    bufs = [np.empty(rows * k, dtype=np.float32) for _ in range(2)]
    b64 = torch.empty(rows * k, dtype=f64)
    fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below

    def load(ci: int) -> np.ndarray:
        r0 = starts[ci]
        r1 = min(n, r0 + rows)
        out = bufs[ci % 2][: (r1 - r0) * k]
        read_exact(fh, offset + 4 * r0 * k, out)
        return out

    try:
        with ThreadPoolExecutor(1) as reader:
            nxt = reader.submit(load, 0)
            for ci in range(len(starts)):
                raw = nxt.result()
                if ci + 1 < len(starts):
                    nxt = reader.submit(load, ci + 1)
                r0 = starts[ci]
                m_rows = raw.size // k
                z = torch.from_numpy(raw).view(m_rows, k)
                d = b64[: m_rows * k].view(m_rows, k)
                y = labels_t[r0 : r0 + m_rows]
                ar = torch.arange(m_rows)
                d.copy_(z).sub_(shift)
                s1 += d.sum(dim=0)
                dy = d[ar, y]
                d.square_()
                s2 += d.sum(dim=0)
                p1.index_add_(0, y, dy)
                p2.index_add_(0, y, dy * dy)
                pn += torch.bincount(y, minlength=k)
                zmax, am = z.max(dim=1)
                zmax64 = zmax.to(f64)
                predicted += torch.bincount(am, minlength=k)
                correct += torch.bincount(y[am == y], minlength=k)
                d.copy_(z).sub_(zmax64[:, None]).exp_()
                nll += (d.sum(dim=1).log_() + zmax64 - z[ar, y].to(f64)).sum()
    finally:
        fh.close()
    acc = {
        "s1": s1.numpy(),
        "s2": s2.numpy(),
        "p1": p1.numpy(),
        "p2": p2.numpy(),
        "pn": pn.numpy(),
        "correct": correct.numpy(),
        "predicted": predicted.numpy(),
        "nll": float(nll),
    }
    return reference_from_sums(n, shift_np, acc)


def lort_pass(path: Path, labels: np.ndarray, tc: np.ndarray, threads: int, hessian: str):
    import lort._core as core

    report = core.analyze_npy(path, labels, hessian=hessian, threads=threads).finalize(tc)
    pc = report["per_class"]
    out = {
        name: np.asarray(pc[name])
        for name in ("pos_mean", "neg_mean", "pos_std", "neg_std", "magnitude", "accuracy")
    }
    out["nll"] = np.array(report["overall"]["nll"])
    out["overall_accuracy"] = np.array(report["overall"]["accuracy"])
    if report.get("hessian"):
        out["lambda_min"] = np.array(report["hessian"]["lambda_min"])
    return out


def proc_status_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process in KiB. Not ru_maxrss: on
    Linux that survives exec and would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child_file(spec: dict) -> dict:
    """One method on one file: warm the cache, time the runs, save the stats."""
    path = Path(spec["path"])
    n, k, threads = spec["n"], spec["k"], spec["threads"]
    method, variant = spec["method"], spec["variant"]
    labels = np.load(spec["labels"])
    tc = np.load(spec["train_counts"])
    if method == "lort":
        import lort._core  # noqa: F401 - count the import in the baseline RSS
    elif method == "torch":
        import torch

        torch.set_num_threads(threads)
    base_kib = proc_status_kib("VmRSS")
    warm = warm_cache(path)

    def run() -> dict:
        if method == "read":
            return read_only_pass(path, n, k, threads, variant)
        if method == "lort":
            return lort_pass(path, labels, tc, threads, variant)
        if method == "numpy":
            return numpy_pass(path, n, k, labels, threads, variant)
        if method == "torch":
            return torch_pass(path, n, k, labels, threads, variant)
        raise ValueError(method)

    times: list[float] = []
    cpu: list[float] = []
    stats: dict = {}
    for _ in range(spec["repeats"]):
        c0 = time.process_time()
        t0 = time.perf_counter()
        stats = run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if method in ("numpy", "torch") and sum(times) > spec["budget"]:
            break
    if stats and spec.get("stats_out"):
        np.savez(spec["stats_out"], **stats)
    return {
        "times": times,
        "cpu_times": cpu,
        "warm_s": warm,
        "base_rss_kib": base_kib,
        "peak_rss_kib": proc_status_kib("VmHWM"),
        "lambda_min": float(stats["lambda_min"]) if "lambda_min" in stats else None,
    }


def child_exact(spec: dict) -> dict:
    """hessian='exact' vs 'none' (and 'bound') on float32 rows held in memory."""
    import lort._core as core

    n, k, threads = spec["n"], spec["k"], spec["threads"]
    t0 = time.perf_counter()
    z, labels = in_memory_logits(n, k)
    gen = time.perf_counter() - t0
    out: dict = {"gen_s": gen, "modes": {}}
    small = min(n, 1000)
    runs = [("none", n), ("bound", n), ("exact", n), ("exact", small)]
    for mode, rows in runs:
        times, cpu = [], []
        lam = None
        for _ in range(spec["repeats"]):
            c0 = time.process_time()
            t0 = time.perf_counter()
            s = core.LogitStats(k, hessian=mode, threads=threads)
            s.update(z[:rows], labels[:rows])
            rep = s.finalize()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            if rep.get("hessian"):
                lam = (rep["hessian"]["lambda_min"], rep["hessian"]["psd"])
        key = mode if rows == n else f"{mode}, first {rows:,} rows"
        out["modes"][key] = {"times": times, "cpu_times": cpu, "hessian": lam, "rows": rows}
    out["peak_rss_kib"] = proc_status_kib("VmHWM")
    return out


def child_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = child_exact(spec) if spec["method"] == "exact" else child_file(spec)
    core = sys.modules.get("lort._core")
    if core is not None and getattr(core, "__file__", None):
        result["lort_build"] = build_stamp(core.__file__)
    print(CHILD_MARK + json.dumps(result), flush=True)


def spawn(spec: dict) -> dict:
    env = dict(os.environ)
    threads = str(spec["threads"])
    # The references use no BLAS; keep BLAS pools from starting extra threads.
    env.update(OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if spec["method"] == "torch":
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK) :])
    raise RuntimeError(
        f"child {spec['method']} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )


# ------------------------------------------------------------------------ report


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def label_of(method: str, variant) -> str:
    if method == "lort":
        return f"lort hessian={variant}"
    if method == "numpy":
        return f"numpy f64 {variant:g} MiB chunks"
    if method == "torch":
        return f"torch f64 {variant:g} MiB chunks"
    return f"read only {variant:g} MiB"


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    return float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0


def compare(a: dict, b: dict, tol: float = 1e-6) -> str:
    parts = []
    for key in ("magnitude", "accuracy", "pos_std", "neg_std", "nll"):
        if key in a and key in b:
            parts.append(f"{key} {max_abs(a[key], b[key]):.1e}")
    ok = all(max_abs(a[key], b[key]) <= tol for key in ("magnitude", "accuracy"))
    return ", ".join(parts) + (" -> ok" if ok else f" -> MISMATCH (magnitude/accuracy > {tol:g})")


def build_stamp(path: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(path)))


def extension_info() -> str:
    """Where lort._core is loaded from and when it was built (others may
    rebuild it while the benchmark runs)."""
    import importlib.metadata
    import importlib.util

    try:
        spec = importlib.util.find_spec("lort._core")
    except ImportError as e:
        return f"lort._core not importable: {e}"
    if spec is None or spec.origin is None:
        return "lort._core not found"
    stamp = build_stamp(spec.origin)
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = "not installed"
    return f"{spec.origin} (built {stamp}); torch {torch}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated NxK")
    ap.add_argument("--dir", default="runs/bench", help="where the .npy files go")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=",".join(ALL_METHODS), help=",".join(ALL_METHODS))
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--numpy-chunks-mb", default="4,16,64", help="numpy chunk sizes to try")
    ap.add_argument("--torch-chunk-mb", type=float, default=16.0)
    ap.add_argument(
        "--ref-budget",
        type=float,
        default=45.0,
        help="numpy/torch stop repeating once their runs took this many seconds",
    )
    ap.add_argument("--exact-size", default="100000x1000")
    ap.add_argument("--prepare", action="store_true", help="only write the data files")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child_main(args.child)
        return

    only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = set(only) - set(ALL_METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {ALL_METHODS}")
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    threads = args.threads
    started = time.perf_counter()

    def say(text: str = "") -> None:
        print(text, flush=True)

    say("# lort analyze_npy benchmark")
    say(f"command:  {shlex.join([os.path.basename(sys.executable), *sys.argv])}")
    say(f"cpu:      {cpu_model()} ({os.cpu_count()} logical CPUs)")
    say(f"threads:  {threads}")
    say(f"python:   {platform.python_version()}, numpy {np.__version__}")
    say(f"lort:     {extension_info()}")
    say(f"date:     {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    say(f"load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    # Disk: only files that will be written need room.
    need = 0
    for n, k in sizes:
        p = files_for(root, n, k)["logits"]
        want = len(npy_header((n, k), np.dtype("<f4"))) + 4 * n * k
        if not (p.exists() and p.stat().st_size == want):
            need += want
    free = shutil.disk_usage(root).free
    say(f"disk:     {free / 1e9:.1f} GB free under {root}, {need / 1e9:.1f} GB to write")
    if need > free - 2e9:
        sys.exit(f"not enough disk under {root}: need {need / 1e9:.1f} GB + 2 GB slack")
    say()

    results: dict = {"command": sys.argv, "cpu": cpu_model(), "threads": threads, "sizes": []}
    md_blocks: list[str] = []
    builds: set[str | None] = set()
    header = [
        "method",
        "runs",
        "median s",
        "GB/s",
        "vs read",
        "vs best numpy",
        "CPU s",
        "peak RSS MiB",
    ]

    variants: list[tuple[str, object]] = []
    if "read" in only:
        variants.append(("read", 16.0))
    if "lort" in only:
        variants += [("lort", "none"), ("lort", "bound")]
    if "numpy" in only:
        variants += [("numpy", float(c)) for c in args.numpy_chunks_mb.split(",")]
    if "torch" in only:
        variants.append(("torch", args.torch_chunk_mb))

    for n, k in sizes:
        paths, how = ensure_data(root, n, k, threads)
        if args.prepare:
            say(f"{paths['logits']}: {how}")
            continue
        nbytes = 4 * n * k
        budget_mib = 64 + 9 * n / MIB
        say(f"## N = {n:,}, K = {k:,}: {nbytes / 1e9:.2f} GB of float32 logits ({how})")
        say(f"   file: {paths['logits']}")
        rows_out = []
        stats: dict[str, dict] = {}
        for method, variant in variants:
            name = label_of(method, variant)
            stats_out = root / f"stats_{n}x{k}_{method}_{variant}.npz"
            spec = {
                "method": method,
                "variant": variant,
                "path": str(paths["logits"]),
                "labels": str(paths["labels"]),
                "train_counts": str(paths["train_counts"]),
                "n": n,
                "k": k,
                "threads": threads,
                "repeats": args.repeats,
                "budget": args.ref_budget,
                "stats_out": None if method == "read" else str(stats_out),
            }
            r = spawn(spec)
            r["name"], r["method"], r["variant"] = name, method, variant
            r["median_s"] = statistics.median(r["times"])
            if method != "read":
                with np.load(stats_out) as z:
                    stats[name] = {key: z[key] for key in z.files}
            rows_out.append(r)
            if r.get("lort_build"):
                builds.add(r["lort_build"])
            say(
                f"   {name:<26} runs {' '.join(f'{t:.3f}' for t in r['times'])} s; "
                f"cache warm-up read {nbytes / r['warm_s'] / 1e9:.2f} GB/s; "
                f"RSS after imports {r['base_rss_kib'] / 1024:.0f} MiB"
            )
        numpy_rows = [r for r in rows_out if r["method"] == "numpy"]
        best = min(numpy_rows, key=lambda r: r["median_s"]) if numpy_rows else None
        read = next((r for r in rows_out if r["method"] == "read"), None)
        table = []
        for r in rows_out:
            mark = " (best)" if best is not None and r is best and len(numpy_rows) > 1 else ""
            ratio = f"{best['median_s'] / r['median_s']:.2f}x" if best else "n/a"
            cut = r["method"] in ("numpy", "torch") and len(r["times"]) < args.repeats
            short = " *" if cut else ""
            table.append(
                [
                    r["name"] + mark,
                    f"{len(r['times'])}{short}",
                    f"{r['median_s']:.3f}",
                    f"{nbytes / r['median_s'] / 1e9:.2f}",
                    f"{read['median_s'] / r['median_s']:.2f}" if read else "n/a",
                    ratio,
                    f"{statistics.median(r['cpu_times']):.2f}",
                    f"{r['peak_rss_kib'] / 1024:.0f}",
                ]
            )
        say()
        say(fmt_table(table, header))
        say(f"RSS budget (64 MiB + 9 B x N): {budget_mib:.0f} MiB")
        if any(len(r["times"]) < args.repeats for r in rows_out if r["method"] != "lort"):
            say(
                f"* fewer than {args.repeats} runs: the reference passed --ref-budget "
                f"({args.ref_budget:g} s) and stopped repeating"
            )
        by = {(r["method"], r["variant"]): r for r in rows_out}
        if ("lort", "none") in by and ("lort", "bound") in by:
            q = by["lort", "bound"]["median_s"] / by["lort", "none"]["median_s"]
            lam = by["lort", "bound"].get("lambda_min")
            say(f"hessian bound / none: {q:.2f}x (target <= 1.3x); bound lambda_min = {lam:.3g}")
        if read is not None and ("lort", "none") in by:
            q = read["median_s"] / by["lort", "none"]["median_s"]
            say(f"hessian=none speed / read-only speed: {q:.2f} (target >= 0.75)")
        if best is not None:
            ref = stats[best["name"]]
            for name, s in stats.items():
                if name != best["name"]:
                    say(f"max |{name} - {best['name']}|: {compare(s, ref)}")
        else:
            say("correctness check skipped: numpy reference not run")
        say(f"load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        say()
        md_blocks.append(
            f"N = {n:,}, K = {k:,} ({nbytes / 1e9:.2f} GB), {threads} threads, "
            f"RSS budget {budget_mib:.0f} MiB\n\n" + fmt_md(table, header)
        )
        results["sizes"].append(
            {
                "n": n,
                "k": k,
                "bytes": nbytes,
                "rss_budget_mib": budget_mib,
                "rows": [{key: v for key, v in r.items()} for r in rows_out],
            }
        )

    if "exact" in only and not args.prepare:
        n, k = parse_size(args.exact_size)
        say(
            f"## hessian='exact', N = {n:,}, K = {k:,}: float32 rows in memory, "
            f"LogitStats.update + finalize"
        )
        r = spawn({"method": "exact", "n": n, "k": k, "threads": threads, "repeats": args.repeats})
        none_s = statistics.median(r["modes"]["none"]["times"])
        table = []
        for mode, m in r["modes"].items():
            med = statistics.median(m["times"])
            lam = m["hessian"]
            table.append(
                [
                    f"lort hessian={mode}",
                    str(len(m["times"])),
                    f"{med:.3f}",
                    f"{4 * m['rows'] * k / med / 1e9:.2f}",
                    f"{med / none_s:.2f}x" if m["rows"] == n else "",
                    f"{statistics.median(m['cpu_times']):.2f}",
                    "" if lam is None else f"{lam[0]:.3g} ({'psd' if lam[1] else 'NOT psd'})",
                ]
            )
            say(f"   {mode:<24} runs {' '.join(f'{t:.3f}' for t in m['times'])} s")
        eheader = ["method", "runs", "median s", "GB/s", "vs none", "CPU s", "lambda_min"]
        say()
        say(fmt_table(table, eheader))
        exact_s = statistics.median(r["modes"]["exact"]["times"])
        say(
            f"exact: {exact_s:.3f} s (target < 1 s); peak RSS {r['peak_rss_kib'] / 1024:.0f} MiB "
            f"(the {4 * n * k / MIB:.0f} MiB of logits included)"
        )
        small = [m for m in r["modes"].values() if m["rows"] < n]
        if small:
            fixed = statistics.median(small[0]["times"])
            gram = exact_s - fixed - none_s
            flops = 2.0 * n * k * (k + 1) / 2
            say(
                f"exact minus its cost on {small[0]['rows']:,} rows (eigenvalues, set-up) "
                f"minus the 'none' pass: {gram:.3f} s for the Gram update's "
                f"{flops / 1e9:.0f} GFLOP = {flops / max(gram, 1e-9) / 1e9:.0f} GFLOP/s"
            )
        builds.add(r.get("lort_build"))
        say()
        md_blocks.append(
            f"hessian='exact', N = {n:,}, K = {k:,} in memory, {threads} threads\n\n"
            + fmt_md(table, eheader)
        )
        results["exact"] = {"n": n, "k": k, **r}

    if args.prepare:
        return
    say("## Markdown")
    say()
    say(f"{cpu_model()}, {threads} threads. Command: `{shlex.join(['python', *sys.argv])}`")
    say()
    say("\n\n".join(md_blocks))
    say()
    say(f"total benchmark time: {time.perf_counter() - started:.0f} s")
    say(f"lort at the end: {extension_info()}")
    builds.discard(None)
    if len(builds) > 1:
        say(
            f"WARNING: lort._core was rebuilt during the run; children loaded builds "
            f"{sorted(builds)}, so rows are not all comparable"
        )
    results["lort_builds"] = sorted(builds)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
