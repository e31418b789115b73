"""Test ECE of every compared head of finished runs: raw, with the temperature fitted by plain
NLL on the validation split (lort before issue 27), and with lort's rule
(:func:`lort.stage2.calibrate.calibrate`: class-balanced NLL, a T below 1 moved towards 1 by
its standard error, used only where it helps held-out folds by a margin). Each head is the one
`lort compare` kept for the run's first compared seed (tuned).

    python benches/calibration_small_splits.py runs/dg0 runs/dg1 ...

Prints one row per (run, method) and, last, how many heads each rule made worse than raw and
the mean ECE of each; docs/results.md ("Keep regret and calibration") has the numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lort.analysis import analyze
from lort.experiments.keep import _head, _saved_head
from lort.experiments.points import protocol_point
from lort.run.finished import open_run_locked
from lort.stage2.calibrate import calibrate, fit_temperature


def main(roots: list[Path]) -> None:
    rules = ("plain NLL", "lort")
    worse = dict.fromkeys(rules, 0)
    total = dict.fromkeys(("raw", *rules), 0.0)
    n = 0
    print(f"{'run':12} {'method':17} {'raw':>6} {'plain NLL':>16} {'lort':>16}")
    for root in roots:
        with open_run_locked(root, lambda _: None) as run:
            table = run.folder.read_json("compare.json")
            problem = run.problem
            yv, yt = problem.data.val_labels, problem.data.test_labels
            for name in table["points"]:
                saved = _saved_head(run, protocol_point(name, table["seeds"][0], "tuned"))
                method, head, tau = _head(run, saved)
                zv = problem.logits(method, head, "val", tau).astype("float64")
                zt = problem.logits(method, head, "test", tau).astype("float64")
                temps = {
                    "plain NLL": fit_temperature(zv, yv),
                    "lort": calibrate((zv, yv), (zt, yt)).temperature or 1.0,
                }
                raw = analyze(zt, yt, hessian="none").ece
                eces = {r: analyze(zt / t, yt, hessian="none").ece for r, t in temps.items()}
                cells = []
                for r in rules:
                    # T = 1 gives the raw ECE up to the rounding of its sums
                    bad = eces[r] > raw + 1e-12
                    worse[r] += bad
                    total[r] += eces[r]
                    cells.append(f"{eces[r]:.3f}{'!' if bad else ' '} (T {temps[r]:.2f})")
                total["raw"] += raw
                n += 1
                print(f"{root.name:12} {name:17} {raw:6.3f} {cells[0]:>16} {cells[1]:>16}")
    print(f"{n} heads; worse than raw (!): " + ", ".join(f"{r} {worse[r]}" for r in rules))
    print("mean test ECE: " + ", ".join(f"{r} {v / max(n, 1):.4f}" for r, v in total.items()))


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
