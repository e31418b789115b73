"""The bare ``lort fit`` on an idle machine and next to a CPU-bound process, side by side.

Users run lort on shared machines, laptops and CI runners. torch's intra-op threads wait for
each other at every parallel region; when another process holds a core, threads that spin
while they wait take the cores from everyone. lort lets OpenMP threads sleep while they wait
(``OMP_WAIT_POLICY=PASSIVE`` unless the user set it); this benchmark measures the bare
``lort fit`` (the embedded digits run) idle and with ``python -c "while True: pass"`` running
beside it, for lort's default and for spinning threads (``OMP_WAIT_POLICY=ACTIVE``) as the
reference, all in one run. Target: busy at most 2.5x idle for the default.

    python benches/busy_machine.py [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _tables import fmt_table

VARIANTS = {
    "lort default (passive wait)": {},
    "spinning threads (OMP_WAIT_POLICY=ACTIVE)": {"OMP_WAIT_POLICY": "ACTIVE"},
}


def one_fit(env: dict[str, str], threads: int | None) -> float:
    with tempfile.TemporaryDirectory(prefix="lort-busy-") as d:
        cmd = [sys.executable, "-m", "lort", "fit", "--out", str(Path(d) / "run")]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        started = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="fits per variant and condition")
    ap.add_argument("--threads", type=int, help="pass --threads to lort fit")
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.repeats):
        for condition in ("idle", "busy"):
            hog = None
            if condition == "busy":
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(1.0)  # let it take its core
            try:
                for name, extra in VARIANTS.items():
                    t = one_fit(base | extra, args.threads)
                    times.setdefault((name, condition), []).append(t)
                    print(f"repeat {r + 1}: {name}, {condition}: {t:.1f} s", file=sys.stderr)
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    rows = []
    for name in VARIANTS:
        idle = statistics.median(times[(name, "idle")])
        busy = statistics.median(times[(name, "busy")])
        rows.append([name, f"{idle:.1f}", f"{busy:.1f}", f"{busy / idle:.2f}x"])
    print(
        f"bare `lort fit` wall time, median of {args.repeats} (s); cores {os.cpu_count()}"
        + ("" if args.threads is None else f"; --threads {args.threads}")
    )
    print(fmt_table(rows, ["variant", "idle", "busy (1 CPU hog)", "busy / idle"]))


if __name__ == "__main__":
    main()
