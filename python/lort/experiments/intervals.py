"""Confidence intervals for comparing re-training methods on the same features.

Two methods re-trained on the same backbone with the same stage-2 seed see the same batches,
so their accuracies are paired; the difference is what varies less and what a comparison is
about. The unit of the interval is what was drawn at random: the stage-1 backbones when there
are several (each unit the mean over its stage-2 seeds), else the stage-2 seeds of one backbone
(which says nothing about another backbone: the output says which). A difference is marked
significant when its 95% Student-t interval excludes 0. With fewer than :data:`MIN_UNITS`
units, or differences that do not vary at all (the t-interval is then zero wide whatever the
truth), no interval is given and nothing is called significant: the interval says why.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95
MIN_UNITS = 3
# A spread below this (in accuracy, a fraction) is rounding, not variation: one test image in
# a million is 1e-6.
NO_SPREAD = 1e-9


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values with a two-sided Student-t interval at :data:`LEVEL`; ``low``
    and ``high`` None, and ``why`` saying so, when it cannot be computed."""

    mean: float
    low: float | None
    high: float | None
    n: int
    why: str | None = None

    @property
    def significant(self) -> bool:
        """Whether there is an interval and it excludes 0."""
        if self.low is None or self.high is None:
            return False
        return not self.low <= 0.0 <= self.high

    def to_dict(self) -> dict[str, float | int | bool | str | None]:
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "significant": self.significant,
            "why": self.why,
        }


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval | None:
    """Mean and t-interval of ``values``: None without any, no interval (``why`` says) with
    fewer than :data:`MIN_UNITS` or without spread."""
    from scipy.stats import t

    n = len(values)
    if n == 0:
        return None
    mean = statistics.fmean(values)
    if n < MIN_UNITS:
        return Interval(mean, None, None, n, f"too few: {n} of the {MIN_UNITS} an interval needs")
    spread = statistics.stdev(values)
    if spread <= NO_SPREAD:
        return Interval(mean, None, None, n, "too few to tell: every difference is the same")
    half = float(t.ppf(0.5 + level / 2, n - 1)) * spread / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired(a: dict[str, float], b: dict[str, float]) -> list[float]:
    """``a[u] - b[u]`` for every unit ``u`` the two share, in ``a``'s order."""
    return [a[u] - b[u] for u in a if u in b]
