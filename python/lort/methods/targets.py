"""Training targets: one-hot and LORT's retargeted (label-smoothed) distribution.

LORT trains against ``q = (1 - delta) * onehot(y) + delta / K``: the true class gets
``1 - delta + delta / K`` and every other class ``delta / K``, the semantics of
``torch.nn.functional.cross_entropy(..., label_smoothing=delta)`` (``delta / K``, not
``delta / (K - 1)``). With ``delta`` close to 1 the true class keeps only a small lead,
whose size is :func:`rho`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lort.errors import InputError, LabelError


def check_delta(
    delta: float, *, allow_one: bool = True, name: str = "the smoothing delta"
) -> float:
    """``delta`` as a float in [0, 1] (or [0, 1) with ``allow_one=False``), else InputError
    naming it as ``name``. The one statement of the delta's range."""
    try:
        delta = float(delta)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {delta!r}") from None
    upper_ok = delta <= 1.0 if allow_one else delta < 1.0
    if not (delta >= 0.0 and upper_ok):
        bound = "1]" if allow_one else "1)"
        raise InputError(f"{name} must lie in [0, {bound}, got {delta}")
    return delta


def retarget(labels: Tensor, num_classes: int, delta: float | Tensor, dtype: torch.dtype) -> Tensor:
    """:func:`soft_target` without argument checks, for the loss's inner loop (``delta`` may
    be a 0-d tensor under ``torch.func.vmap``)."""
    onehot = F.one_hot(labels, num_classes).to(dtype)
    if not isinstance(delta, Tensor) and delta == 0.0:
        return onehot
    return onehot * (1.0 - delta) + delta / num_classes


def soft_target(labels: Tensor, num_classes: int, delta: float) -> Tensor:
    """Rows ``(1 - delta) * onehot(y) + delta / K`` (B x K, default float dtype); rows sum to 1."""
    delta = check_delta(delta)
    if num_classes < 1:
        raise InputError(f"num_classes must be at least 1, got {num_classes}")
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise LabelError(f"labels must be a 1-D integer tensor, got {labels.dtype} {labels.shape}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise LabelError(f"labels must lie in [0, {num_classes}), got a label outside")
    return retarget(labels.long(), num_classes, delta, torch.get_default_dtype())


def rho(num_classes: int, delta: float) -> float:
    """Ratio of the true-class target to another class's: ``1 + K (1 - delta) / delta``.

    ``rho(100, 0.98)`` is about 3.04 and ``rho(10, 0.98)`` about 1.20; ``delta = 0`` (one-hot)
    gives infinity and ``delta = 1`` (uniform) gives 1.
    """
    delta = check_delta(delta)
    if num_classes < 1:
        raise InputError(f"num_classes must be at least 1, got {num_classes}")
    if delta == 0.0:
        return math.inf
    return 1.0 + num_classes * (1.0 - delta) / delta
