"""Benchmark: ``LortClassifier.predict_proba``'s calibration on long-tailed digits.

The training set of docs/api.md's estimator example (scikit-learn's 8 x 8 digits, class c
keeping ``100 // (c + 1) + 5`` of its first-1,200 images: 105 down to 15), validation
``X[1200:1500]``, test ``X[1500:]``. For each seed the estimator fits once; the script prints
the run's temperature, test accuracy, mean top probability and ECE (lort's 15 equal-width
bins) of ``predict_proba`` (softmax(z / T)) beside those of the raw softmax(z), which is what
``predict_proba`` returned before it applied the run's temperature (the logits are the same;
the ECE of ``predict_proba`` is taken on z / T, whose softmax it is).
Run (from the repository root, in the project's venv)::

    python benches/estimator_calibration.py [--seeds 3] [--method lort]
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
from sklearn.datasets import load_digits

from _tables import fmt_md, fmt_table  # benches/ is on sys.path when run as a script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--method", default="lort")
    args = ap.parse_args()
    import lort

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(y[:1200] == c))[: 100 // (c + 1) + 5] for c in range(10)]
    )
    print(f"command: python {shlex.join(sys.argv)}")
    header = ["seed", "T", "test acc %", "mean top p raw", "ECE raw", "mean top p", "ECE"]
    rows = []
    for seed in range(args.seeds):
        clf = lort.LortClassifier(method=args.method, seed=seed)
        clf.fit(X[keep], y[keep], X[1200:1500], y[1200:1500])
        z, p = clf.decision_function(X[1500:]), clf.predict_proba(X[1500:])
        labels = np.searchsorted(clf.classes_, y[1500:])
        raw = lort.analyze(z, labels, hessian="none")
        calibrated = lort.analyze(z / clf.run_.temperature, labels, hessian="none")
        top_raw = np.exp(z - z.max(1, keepdims=True))
        top_raw = (1 / top_raw.sum(1)).mean()
        rows.append(
            [
                str(seed),
                f"{clf.run_.temperature:.2f}",
                f"{100 * calibrated.accuracy:.1f}",
                f"{top_raw:.3f}",
                f"{raw.ece:.3f}",
                f"{p.max(1).mean():.3f}",
                f"{calibrated.ece:.3f}",
            ]
        )
    print(fmt_table(rows, header))
    print(fmt_md(rows, header))


if __name__ == "__main__":
    main()
