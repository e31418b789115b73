"""The three-protocol Markdown table of docs/results.md from pooled `lort compare` outputs.

    python tools/protocols_table.py TUNED_DIR AUTHORS_DIR TEST_SELECTED_DIR

Each DIR is the `--out` folder of `lort compare RUN1 RUN2 ... --protocol P --out DIR` over the
same runs (stage-1 backbones). Per method: test accuracy All (mean ± sample std over the
backbones) under each protocol, the tuned protocol's paired difference against LORT with its 95%
t-interval ("n.s." when it holds 0), and the gap test-selected minus tuned (what choosing on the
test set adds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(folder: Path, protocol: str) -> dict[str, dict[str, Any]]:
    data = json.loads((folder / "compare.json").read_text())
    if data.get("protocol") != protocol:
        got = data.get("protocol")
        raise SystemExit(f"{folder}/compare.json is protocol {got}, not {protocol}")
    return {r["method"]: r for r in data["rows"]}


def pct(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "—"
    if s["std"] is None:
        return f"{100 * s['mean']:.1f}"
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def diff(iv: dict[str, Any] | None) -> str:
    if iv is None:
        return "—"
    text = f"{100 * iv['mean']:+.1f} [{100 * iv['low']:+.1f}, {100 * iv['high']:+.1f}]"
    return text if iv["significant"] else text + " n.s."


def main(tuned_dir: Path, authors_dir: Path, test_dir: Path) -> None:
    tuned = load(tuned_dir, "tuned")
    authors = load(authors_dir, "authors")
    test = load(test_dir, "test-selected")
    print(
        "| method | tuned (val) | vs LORT, tuned | authors (last epoch) | test-selected "
        "| test-selected - tuned |"
    )
    print("|---|---|---|---|---|---|")
    for m, row in tuned.items():
        gap = 100 * (test[m]["all"]["mean"] - row["all"]["mean"])
        print(
            f"| {m} | {pct(row['all'])} | {diff(row['vs_reference'])} | "
            f"{pct(authors[m]['all'])} | {pct(test[m]['all'])} | {gap:+.1f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*(Path(a) for a in sys.argv[1:]))
