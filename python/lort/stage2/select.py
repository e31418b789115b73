"""The one rule of every choice made on validation: the best class-mean accuracy, ties broken by
the lower NLL, then by the first."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # the grid imports this rule; its result types are only annotations here
    from lort.stage2.grid import EpochScores, HeadResult

T = TypeVar("T")


@dataclass(frozen=True)
class ValScore:
    """A head on the validation split: class-mean accuracy, then NLL (the tie-break)."""

    accuracy: float | None
    nll: float | None


def better(acc: T, nll: T, best_acc: T, best_nll: T) -> T:
    """Whether (``acc``, ``nll``) beats the best so far: a higher class-mean accuracy, or the same
    accuracy and a lower NLL; an equal score does not, so the first of equals stays. The one
    rule of every choice on validation (an exact tie in accuracy is common on small validation
    sets, and the first of equals is no choice). Python floats give a bool; tensors (a grid's
    heads, one score each) give a mask."""
    return (acc > best_acc) | ((acc == best_acc) & (nll < best_nll))  # type: ignore[operator]


def best_on_validation(scores: list[ValScore]) -> int:
    """The index of the best score under :func:`better` (a missing accuracy is the worst, a
    missing NLL the highest)."""

    def parts(v: ValScore) -> tuple[float, float]:
        acc = -math.inf if v.accuracy is None else v.accuracy
        return acc, math.inf if v.nll is None else v.nll

    best = 0
    for i in range(1, len(scores)):
        if better(*parts(scores[i]), *parts(scores[best])):
            best = i
    return best


def kept_scores(
    results: list[HeadResult], last: bool = False
) -> tuple[list[EpochScores], list[ValScore]]:
    """Each result's scores at its kept epoch (its best, or the last) on the split it was
    scored on, and the same as the :class:`ValScore` every choice compares."""
    picked = [r.scores(last) for r in results]
    return picked, [ValScore(e.val_accuracy, e.val_nll) for e in picked]
