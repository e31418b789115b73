"""Stage-1 losses for the backbones of Table 3: CE, CE-DRW, LDAM-DRW and balanced softmax.

DRW (deferred re-weighting, Cao et al., 2019) trains with plain weights first and switches
to class-balanced weights (effective number, ``beta = 0.9999``) from epoch
``round(drw_start * total_epochs)`` on: epoch 160 of 200 with the default ``drw_start=0.8``.
Epochs count from 0.

LDAM-DRW trains as its authors ran it (kaidic/LDAM-DRW): the network ends in their
normalised layer (:class:`lort.models.NormedLinear`, :func:`stage1_head`), whose logits are
cosines, and the loss subtracts the margins (largest 0.5) from the true class's cosine and
scales everything by ``s = 30`` (:data:`LDAM_SCALE`); the accuracy stage 1 reports is that
of the cosines (the model's output). The other losses train a linear head.

Stage 2 starts every method from the stage-1 classifier as an ``nn.Linear``
(:func:`stage1_init`, the one reader of a stage-1 checkpoint's head). A normalised head is
represented there by ``s W_j / ||W_j||`` with no bias: on unit-norm features it gives exactly
stage 1's logits ``s cos(W_j, f)`` (the scale its softmax saw). Stage 2 reads the backbone's
features as they are, not normalised, so these logits are stage 1's times ``||f||``: the same
ranking (the same accuracy) per image, larger or smaller magnitudes from image to image (with
feature norms of a few units, the re-trained heads start from saturated softmaxes).
lort does not normalise features for such runs: the stage-2 methods, the feature cache,
``lort predict`` and ``lort export`` would then mean something else for one stage-1 loss
than for the others (Table 3 re-trains the same heads on every backbone), and the heads that
want unit features (``cosine``, ``ldam``) normalise them themselves.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lort.checks import check_counts
from lort.errors import InputError
from lort.methods.losses import LossFn, build_loss, class_balanced_weights
from lort.models import HeadKind
from lort.options import STAGE1_LOSSES

# LDAM-DRW's s (``cifar_train.py:213``), on the cosines of the normalised head.
LDAM_SCALE = 30.0


def stage1_head(loss: str) -> HeadKind:
    """The head stage 1 trains with ``loss``: LDAM-DRW's normalised layer, else linear."""
    return "normed" if loss == "ldam-drw" else "linear"


def checkpoint_head(state: Mapping[str, Tensor], prefix: str = "head.") -> HeadKind:
    """The head a stage-1 state dict holds, read from its keys (not from the run's config: an
    ``ldam-drw`` run from before the normalised head has a linear one, with a bias)."""
    return "linear" if f"{prefix}bias" in state else "normed"


def stage1_init(state: Mapping[str, Tensor], prefix: str = "head.") -> nn.Linear:
    """The stage-1 classifier in ``state`` (its ``{prefix}weight``, ``{prefix}bias``) as the
    ``nn.Linear`` stage 2 starts from: a linear head as it is, a normalised one as
    ``LDAM_SCALE * W_j / ||W_j||`` with a zero bias (see the module docstring)."""
    weight = state[f"{prefix}weight"].detach()
    if checkpoint_head(state, prefix) == "linear":
        bias = state[f"{prefix}bias"].detach()
    else:
        weight = LDAM_SCALE * F.normalize(weight, dim=1)
        bias = torch.zeros(weight.shape[0])
    # skip_init: the values are copied in, so no initialisation (and no random draw) is wasted.
    init = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0])
    with torch.no_grad():
        init.weight.copy_(weight)
        init.bias.copy_(bias)
    return init


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
    ldam_scale: float = LDAM_SCALE,
) -> LossFn:
    """The stage-1 loss ``name`` (one of :data:`STAGE1_LOSSES`) to use in ``epoch``; LDAM's
    expects the cosine logits of :func:`stage1_head`'s normalised layer."""
    if name not in STAGE1_LOSSES:
        raise InputError(f"unknown stage-1 loss {name!r}; choose one of {', '.join(STAGE1_LOSSES)}")
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
