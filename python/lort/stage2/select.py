"""The one rule of every choice made on validation: the best class-mean accuracy, ties broken by
the lower NLL, then by the first."""

from __future__ import annotations

import functools
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


def ranked(scores: list[ValScore]) -> list[int]:
    """The indices of ``scores``, best first under :func:`better` (a missing accuracy is the
    worst, a missing NLL the highest; of equals, the first first)."""

    def parts(v: ValScore) -> tuple[float, float]:
        acc = -math.inf if v.accuracy is None else v.accuracy
        return acc, math.inf if v.nll is None else v.nll

    def order(i: int, j: int) -> int:
        if better(*parts(scores[i]), *parts(scores[j])):
            return -1
        if better(*parts(scores[j]), *parts(scores[i])):
            return 1
        return i - j

    return sorted(range(len(scores)), key=functools.cmp_to_key(order))


def best_on_validation(scores: list[ValScore]) -> int:
    """The index of the best score under :func:`better` (see :func:`ranked`)."""
    return ranked(scores)[0]


# Successive halving: at each rung the better half of the configurations still training trains
# on; the rungs sit at halves of the epochs (the last at half of them, the one before at a
# quarter, ...), none before a tenth of them. A third kept, or rungs from the first epoch,
# train fewer epochs but lose accuracy: at the first epochs a learning rate that wins at the
# end often scores below the stage-1 head, which a tiny one leaves unchanged
# (docs/performance.md, "The search", replays the schedules on the full search's curves).
HALVING_ETA = 2
HALVING_START = 10


def halving_rungs(configs: int, epochs: int) -> list[tuple[int, int]]:
    """The rungs of a successive-halving search of ``configs`` configurations of ``epochs``
    epochs each: (epoch, configurations kept) pairs, the epochs rising. After each rung's epoch
    only the best 1/:data:`HALVING_ETA` (rounded up) of those still training, by their best
    epoch so far under :func:`better`, trains on; the others stop there (their epochs so far
    stay candidates). With ``R = ceil(log_eta configs)`` halvings the rungs sit at
    ``epochs // eta**j`` for j = R down to 1, those before ``epochs // HALVING_START`` (or
    epoch 1) or on an earlier rung's epoch left out."""
    depth = 0
    while HALVING_ETA**depth < configs:
        depth += 1
    start = max(1, epochs // HALVING_START)
    rungs: list[tuple[int, int]] = []
    alive = configs
    for j in range(depth, 0, -1):
        epoch = epochs // HALVING_ETA**j
        if epoch < start or (rungs and epoch <= rungs[-1][0]):
            continue
        alive = math.ceil(alive / HALVING_ETA)
        rungs.append((epoch, alive))
    return rungs


def kept_scores(
    results: list[HeadResult], last: bool = False
) -> tuple[list[EpochScores], list[ValScore]]:
    """Each result's scores at its kept epoch (its best, or the last) on the split it was
    scored on, and the same as the :class:`ValScore` every choice compares."""
    picked = [r.scores(last) for r in results]
    return picked, [ValScore(e.val_accuracy, e.val_nll) for e in picked]
