"""The Markdown tables of docs/results.md from finished runs with a `lort compare` in them.

    python tools/results_table.py RUN [RUN ...]

Each RUN is one `lort fit` (one stage-1 seed) on which `lort compare` has been run; the table
gives, per method, the mean +- sample std over the runs of each run's first compare seed (so a
method's spread covers stage 1 and stage 2 together): test accuracy All / Many / Medium / Few,
then mean Logits Magnitude L, Regularized Std r and class weight norm ||w_c|| per group. A
group with no classes (CIFAR-10-LT has no class under 20 images) prints as a dash.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

GROUPS = ("all", "many", "medium", "few")


def cell(values: list[float | None], scale: float, digits: int) -> str:
    vals = [scale * v for v in values if v is not None]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def main(runs: list[Path]) -> None:
    per_run = [json.loads((r / "compare.json").read_text()) for r in runs]
    methods = per_run[0]["methods"]
    rows = {m: [] for m in methods}
    for data in per_run:
        by_name = {row["method"]: row for row in data["rows"]}
        for m in methods:
            rows[m].append(by_name[m])

    def first(row: dict, key: str) -> float | None:
        return row[key]["values"][0]

    print(f"{len(runs)} run(s): {', '.join(str(r) for r in runs)}\n")
    print("| method | All | Many | Medium | Few |")
    print("|---|---|---|---|---|")
    for m in methods:
        cells = [cell([first(r, g) for r in rows[m]], 100, 1) for g in GROUPS]
        print(f"| {m} | " + " | ".join(cells) + " |")
    print("\n| method | L many | L medium | r many | r medium | ‖w‖ many | ‖w‖ medium |")
    print("|---|---|---|---|---|---|---|")
    for m in methods:
        keys = ("L_many", "L_medium", "r_many", "r_medium", "w_many", "w_medium")
        cells = [cell([first(r, k) for r in rows[m]], 1, 2) for k in keys]
        print(f"| {m} | " + " | ".join(cells) + " |")
    for r in runs:
        report = json.loads((r / "report.json").read_text())
        t = report["timings"]
        total = t["stage1_s"] + t["features_s"] + t["stage2_s"] + t["eval_s"]
        print(
            f"\n{r}: stage 1 {t['stage1_s']:.0f} s, features {t['features_s']:.0f} s, "
            f"stage 2 + eval {t['stage2_s'] + t['eval_s']:.0f} s, phases {total:.0f} s; "
            f"{report['runtime']}"
        )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main([Path(a) for a in sys.argv[1:]])
