"""Confidence intervals for comparing re-training methods on the same features.

Two methods re-trained on the same backbone with the same stage-2 seed see the same batches,
so their accuracies are paired; the difference is what varies less and what a comparison is
about. The unit of the interval is what was drawn at random: the stage-1 backbones when there
are several (each unit the mean over its stage-2 seeds), else the stage-2 seeds of one backbone
(which says nothing about another backbone: the output says which). A difference is marked
significant when its 95% Student-t interval excludes 0.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values with a two-sided Student-t interval at :data:`LEVEL`."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return not self.low <= 0.0 <= self.high

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "significant": self.significant,
        }


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval | None:
    """Mean and t-interval of ``values`` (None with fewer than two)."""
    from scipy.stats import t

    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = float(t.ppf(0.5 + level / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired(a: dict[str, float], b: dict[str, float]) -> list[float]:
    """``a[u] - b[u]`` for every unit ``u`` the two share, in ``a``'s order."""
    return [a[u] - b[u] for u in a if u in b]
