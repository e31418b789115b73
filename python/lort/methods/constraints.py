"""Constraints applied after every optimiser step: MaxNorm (Alshammari et al., 2022, LTWB).

MaxNorm by projected gradient descent: after each step, every class weight vector ``W_j``
longer than ``threshold`` is scaled back onto the L2 ball of that radius; shorter vectors
are left exactly as they are. Biases are not constrained.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lort.errors import InputError
from lort.methods.base import Method


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float if positive, else InputError."""
    if not threshold > 0.0:
        raise InputError(f"the MaxNorm threshold must be positive, got {threshold}")
    return float(threshold)


@torch.no_grad()
def max_norm_(weight: Tensor, threshold: float | Tensor) -> Tensor:
    """In place: ``W_j <- W_j * threshold / max(||W_j||, threshold)`` for every row ``j``.

    A tensor ``threshold`` (checked by the caller) holds one radius per row, shape (K, 1):
    ``lort.head_grid`` projects G stacked heads as one (G*K, D) weight.
    """
    if not isinstance(threshold, Tensor):
        check_threshold(threshold)
    norms = weight.norm(dim=1, keepdim=True)
    return weight.mul_(threshold / norms.clamp_min(threshold))


def apply_constraint(method: Method, head: nn.Module, threshold: float = 0.1) -> None:
    """Apply ``method``'s constraint to ``head`` (call after every optimiser step)."""
    if method.constraint == "maxnorm":
        weight = getattr(head, "weight", None)
        if not isinstance(weight, Tensor) or weight.ndim != 2:
            raise InputError(f"MaxNorm needs a head with a 2-D weight, got {type(head).__name__}")
        max_norm_(weight, threshold)
