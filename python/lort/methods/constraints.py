"""MaxNorm (Alshammari et al., 2022, LTWB): a projection applied after every epoch.

Every class weight vector ``W_j`` longer than the radius is scaled back onto the L2 ball of
that radius; shorter vectors are left exactly as they are; biases are not constrained. As in
LTWB's code (``utils/regularizers.py``: ``setPerLayerThresh``), the radius is relative to the
class norms of the classifier re-training starts from: ``min_j ||W_j|| + threshold * (max_j
||W_j|| - min_j ||W_j||)``, computed once and fixed (threshold 0.1 in their demo), and the
projection runs once per epoch (``utils/trainval.py``; the author's note in LTWB issue #5 says
every iteration was meant, the published numbers come from the code).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lort.errors import InputError
from lort.methods.base import Method
from lort.methods.recipes import recipe_for


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float if finite and non-negative, else InputError."""
    if not 0.0 <= threshold < float("inf"):
        raise InputError(
            f"the MaxNorm threshold (a fraction of the stage-1 norms' range) must be finite and "
            f"non-negative, got {threshold}"
        )
    return float(threshold)


@torch.no_grad()
def maxnorm_radius(weight: Tensor, threshold: float) -> float:
    """LTWB's radius for a classifier starting at ``weight`` (K x D): ``min + threshold *
    (max - min)`` of its row norms (a zero-norm classifier gets the smallest positive float,
    so the projection stays defined)."""
    norms = weight.detach().double().norm(dim=1)
    low, high = float(norms.min()), float(norms.max())
    return max(low + check_threshold(threshold) * (high - low), torch.finfo(torch.float64).tiny)


@torch.no_grad()
def max_norm_(weight: Tensor, radius: float | Tensor) -> Tensor:
    """In place: ``W_j <- W_j * radius / max(||W_j||, radius)`` for every row ``j``.

    A tensor ``radius`` (checked by the caller) holds one radius per row, shape (K, 1):
    ``lort.stage2.grid`` projects G stacked heads as one (G*K, D) weight.
    """
    if not isinstance(radius, Tensor) and not radius > 0.0:
        raise InputError(f"the MaxNorm radius must be positive, got {radius}")
    norms = weight.norm(dim=1, keepdim=True)
    return weight.mul_(radius / norms.clamp_min(radius))


def _class_weight(head: nn.Module) -> Tensor:
    """The (K, D) class weight MaxNorm constrains; InputError for a head without one."""
    weight = getattr(head, "weight", None)
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        raise InputError(f"MaxNorm needs a head with a 2-D weight, got {type(head).__name__}")
    return weight


def constraint_radius(method: Method, head: nn.Module, threshold: float | None = None) -> float:
    """The MaxNorm radius of a head about to be re-trained (``threshold`` relative to its class
    norms, :func:`maxnorm_radius`; None: the recipe's), or 0 for a method without a
    constraint."""
    if method.constraint != "maxnorm":
        return 0.0
    if threshold is None:
        threshold = recipe_for(method.name).hyper["threshold"]
    return maxnorm_radius(_class_weight(head), threshold)


def apply_constraint(method: Method, head: nn.Module, radius: float) -> None:
    """Apply ``method``'s constraint to ``head`` (call after every epoch), MaxNorm with the
    absolute ``radius`` (see :func:`constraint_radius`)."""
    if method.constraint == "maxnorm":
        max_norm_(_class_weight(head), radius)
