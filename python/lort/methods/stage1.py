"""Stage-1 losses for the backbones of Table 3: CE, CE-DRW, LDAM-DRW and balanced softmax.

DRW (deferred re-weighting, Cao et al., 2019) trains with plain weights first and switches
to class-balanced weights (effective number, ``beta = 0.9999``) from epoch
``round(drw_start * total_epochs)`` on: epoch 160 of 200 with the default ``drw_start=0.8``.
Epochs count from 0.

LDAM-DRW's published scale ``s = 30`` is meant for cosine logits (its normalised last
layer). :class:`lort.models.Classifier` has a plain linear head, whose logits are unbounded
and for which ``s = 30`` diverges, so ``ldam_scale`` defaults to 1 here; pass 30 when the
logits are cosines.
"""

from __future__ import annotations

import numpy.typing as npt

from lort.analysis import check_counts
from lort.errors import InputError
from lort.methods.losses import LossFn, build_loss, class_balanced_weights

STAGE1_LOSSES: tuple[str, ...] = ("ce", "ce-drw", "ldam-drw", "bs")


def drw_epoch(total_epochs: int, drw_start: float = 0.8) -> int:
    """The first (0-based) epoch trained with class-balanced weights."""
    if total_epochs < 1:
        raise InputError(f"total_epochs must be at least 1, got {total_epochs}")
    if not 0.0 <= drw_start <= 1.0:
        raise InputError(f"drw_start must lie in [0, 1], got {drw_start}")
    return round(drw_start * total_epochs)


def make_stage1_loss(
    name: str,
    train_counts: npt.ArrayLike,
    epoch: int,
    total_epochs: int,
    *,
    drw_start: float = 0.8,
    drw_beta: float = 0.9999,
    ldam_max_margin: float = 0.5,
    ldam_scale: float = 1.0,
) -> LossFn:
    """The stage-1 loss ``name`` (one of :data:`STAGE1_LOSSES`) to use in ``epoch``."""
    if name not in STAGE1_LOSSES:
        raise InputError(
            f"unknown stage-1 loss {name!r}; choose --stage1-loss from {', '.join(STAGE1_LOSSES)}"
        )
    counts = check_counts(train_counts)
    if not 0 <= epoch < total_epochs:
        raise InputError(f"epoch must lie in [0, {total_epochs}), got {epoch}")
    class_weight = None
    if name.endswith("-drw") and epoch >= drw_epoch(total_epochs, drw_start):
        class_weight = class_balanced_weights(counts, drw_beta)
    if name == "ldam-drw":
        return build_loss(
            "ldam",
            counts,
            ldam_max_margin=ldam_max_margin,
            ldam_scale=ldam_scale,
            class_weight=class_weight,
        )
    if name == "bs":
        return build_loss("balanced-softmax", counts)
    return build_loss("ce", counts, class_weight=class_weight)
