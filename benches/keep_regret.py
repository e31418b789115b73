"""Regret of `lort keep`'s choice on finished runs' tuned comparisons: the test accuracy of the
test-best method minus that of the kept one, for the validation winner (lort before issue 27)
and for lort's rule (the run's own method unless validation tells the winner apart:
:func:`lort.experiments.keep.choose`). Nothing is written.

    python benches/keep_regret.py runs/dg0 runs/dg1 ...

One row per run, then the mean regret of each rule; docs/results.md ("Keep regret and
calibration") has the numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lort.experiments.keep import choose, compared_results
from lort.run.finished import open_run_locked

# Other thresholds of the bootstrap probability, measured beside lort's (keep.SURE).
THRESHOLDS = (0.5, 0.75, 0.8, 0.9, 0.95, 0.99)


def main(roots: list[Path]) -> None:
    before, after = [], []
    by_threshold: dict[float, list[float]] = {sure: [] for sure in THRESHOLDS}
    print(
        f"{'run':10} {'val images':>10} {'test-best':>22} {'validation winner':>24} "
        f"{'kept':>24}  P(winner > own)"
    )
    for root in roots:
        with open_run_locked(root, lambda _: None) as run:
            seeds, results = compared_results(run, "compare.json", "tuned")
            kept, _, validation = choose(run, results, seeds, "tuned")
        test = {n: float(np.mean([r["test"]["all"] for r in rs])) for n, rs in results.items()}
        best = max(test, key=lambda n: test[n])
        winner = validation["winner"]
        before.append(test[best] - test[winner])
        after.append(test[best] - test[kept])
        own = validation["against"].get("own")
        p = "—" if own is None else f"{own['p_better']:.2f}"
        for sure in THRESHOLDS:  # what other thresholds would have kept
            at = winner if own is None or own["p_better"] >= sure else own["method"]
            by_threshold[sure].append(test[best] - test[at])

        best_c, winner_c, kept_c = (f"{n} {100 * test[n]:.1f}" for n in (best, winner, kept))
        print(
            f"{root.name:10} {validation['images']:>10} {best_c:>22} {winner_c:>24} "
            f"{kept_c:>24}  {p}"
        )
    print(
        f"mean regret over {len(roots)} runs (points): validation winner "
        f"{100 * np.mean(before):.2f}, lort's rule {100 * np.mean(after):.2f}; by threshold: "
        + ", ".join(f"{sure:g}: {100 * np.mean(r):.2f}" for sure, r in by_threshold.items())
    )


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
