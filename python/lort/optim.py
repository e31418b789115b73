"""The optimiser and schedule both stages (and the batched grid) train with: SGD with momentum
0.9 and a per-step cosine schedule to 0."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

MOMENTUM = 0.9


@dataclass
class StageConfig:
    """One training stage: SGD with momentum :data:`MOMENTUM` and a cosine schedule to 0."""

    epochs: int
    lr: float
    weight_decay: float
    batch_size: int


def cosine_schedule(
    opt: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = max(total_steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    )


def sgd(
    params: Iterable[nn.Parameter] | list[dict[str, Any]], st: StageConfig, fused: bool = False
) -> torch.optim.SGD:
    """SGD with momentum 0.9; ``fused`` (CUDA only) updates all tensors in one kernel."""
    return torch.optim.SGD(
        params, lr=st.lr, momentum=MOMENTUM, weight_decay=st.weight_decay, fused=fused or None
    )
