"""LORT against plain CE re-training and post-hoc logit adjustment on digits-lt.

For each seed one stage-1 backbone is trained (``lort fit --stop-after stage1``);
every method then re-trains the classifier on that run's cached features (a
copy of the run folder resumed with ``--method``), so the methods differ only
in stage 2. Prints test accuracy (overall, many / medium / few) per method as
mean +- std over the seeds, and the delta that ``--smooth auto`` chose.

Run from the repository root::

    python benches/digits_methods.py [--seeds 5] [--methods lort,ce,logit-adjust]
        [--dir runs/digits-methods]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from lort.cli import main as cli


def run(args: list[str]) -> None:
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    if res.exit_code != 0:
        raise SystemExit(f"lort {' '.join(args)} failed:\n{res.output}")


def fmt(values: list[float | None]) -> str:
    xs = [100 * v for v in values if v is not None]
    if not xs:
        return "—"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.1f} ± {sd:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", default="lort,ce,logit-adjust")
    ap.add_argument("--dir", default="runs/digits-methods")
    args = ap.parse_args()
    root = Path(args.dir)
    methods = args.methods.split(",")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    started = time.perf_counter()
    for seed in range(args.seeds):
        base = root / f"seed{seed}" / "stage1"
        if not (base / "stage1.ckpt").exists():
            run(
                [
                    "fit",
                    "--seed",
                    str(seed),
                    "--out",
                    str(base),
                    "--stop-after",
                    "stage1",
                    "--overwrite",
                ]
            )
        for m in methods:
            out = root / f"seed{seed}" / m
            if not (out / "report.json").exists():
                shutil.rmtree(out, ignore_errors=True)
                shutil.copytree(base, out)
                run(["fit", "--seed", str(seed), "--method", m, "--out", str(out), "--resume"])
            results[m].append(json.loads((out / "report.json").read_text()))

    print(f"digits-lt (IR 10), small CNN, {args.seeds} seeds; command: python {' '.join(sys.argv)}")
    print(f"total {time.perf_counter() - started:.0f} s\n")
    print("| method | All | Many | Medium | Few | delta chosen |")
    print("|---|---|---|---|---|---|")
    for m in methods:
        reps = results[m]
        groups = [r["results"]["groups"] for r in reps]

        def col(name: str, groups: list = groups) -> str:
            return fmt([None if g[name] is None else g[name]["accuracy"] for g in groups])

        deltas = sorted(
            {r["smooth"].get("delta") for r in reps if r["smooth"].get("delta") is not None}
        )
        overall = fmt([r["results"]["overall"]["accuracy"] for r in reps])
        print(
            f"| {m} | {overall} | {col('many')} | {col('medium')} | {col('few')} | "
            f"{', '.join(map(str, deltas)) or '—'} |"
        )


if __name__ == "__main__":
    main()
