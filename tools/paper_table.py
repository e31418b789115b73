"""The paper-protocol Markdown table of docs/results.md from pooled `lort compare` outputs.

    python tools/paper_table.py PAPER_DIR PAPER_TEST_SELECTED_DIR TUNED_DIR AUTHORS_DIR

Each DIR is the `--out` folder of `lort compare RUN1 RUN2 ... --protocol P --out DIR` over the
same runs (stage-1 backbones). Per method: test accuracy All (mean ± sample std over the
backbones of each backbone's mean over its stage-2 seeds) under the paper protocol, its paired
difference against LORT with the 95% t-interval ("n.s." when it holds 0) and LORT's rank; then
the paper's own reporting (paper-test-selected: each backbone's best seed on the test set, read
from the runs' own compare-paper-test-selected.json, averaged over the backbones); then the
tuned and authors protocols' All for comparison.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from protocols_table import diff, pct


def load(folder: Path, protocol: str) -> dict[str, Any]:
    data = json.loads((folder / "compare.json").read_text())
    if data.get("protocol") != protocol:
        raise SystemExit(
            f"{folder}/compare.json is protocol {data.get('protocol')}, not {protocol}"
        )
    return data


def best_trials(data: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per method, mean and std over the backbones of each one's best seed (test All)."""
    per: dict[str, list[float]] = {}
    for run in data["runs"]:
        table = json.loads((Path(run) / "compare-paper-test-selected.json").read_text())
        for row in table["rows"]:
            per.setdefault(row["method"], []).append(row["best_trial"]["all"])
    return {
        m: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else None}
        for m, v in per.items()
    }


def main(paper_dir: Path, test_dir: Path, tuned_dir: Path, authors_dir: Path) -> None:
    paper = load(paper_dir, "paper")
    load(test_dir, "paper-test-selected")
    best = best_trials(load(test_dir, "paper-test-selected"))
    tuned = {r["method"]: r for r in load(tuned_dir, "tuned")["rows"]}
    authors = {r["method"]: r for r in load(authors_dir, "authors")["rows"]}
    rows = {r["method"]: r for r in paper["rows"]}
    order = sorted(rows, key=lambda m: -rows[m]["all"]["mean"])
    print(
        "| method | paper (val) | rank | vs LORT, paper | paper-test-selected (best seed) "
        "| tuned (val) | authors (last epoch) |"
    )
    print("|---|---|---|---|---|---|---|")
    for m, row in rows.items():
        print(
            f"| {m} | {pct(row['all'])} | {order.index(m) + 1} | {diff(row['vs_reference'])} | "
            f"{pct(best[m])} | {pct(tuned[m]['all'])} | {pct(authors[m]['all'])} |"
        )


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    main(*(Path(a) for a in sys.argv[1:]))
