"""The optimiser and schedule both stages (and the batched grid) train with: SGD with momentum
0.9 and a per-step cosine schedule to 0; for stage 1, LDAM-DRW's schedule as an option."""

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


# LDAM-DRW's stage 1 as its authors ran it (kaidic/LDAM-DRW @ 2536330, cifar_train.py, the
# only training script they published, for CIFAR): SGD momentum 0.9 (line 116), lr 0.1,
# weight decay 2e-4 and batch 128 (the argparse defaults, lines 47-56; the README's commands
# do not override them), 200 epochs. The lr (``adjust_learning_rate``, lines 366-376), set at
# the start of each epoch e (from 0): lr * (e + 1) / 5 while e + 1 <= 5, then lr, lr * 0.01
# from epoch 160 and lr * 1e-4 from epoch 180. lort keeps the 5 warm-up epochs and places the
# two decays at 80% and 90% of the run's epochs (160 and 180 of 200), the first where DRW
# switches its weights (``lort.stage1.losses.drw_epoch``), as in the original.
LDAM_DRW_OPTIM: dict[str, Any] = {"lr": 0.1, "weight_decay": 2e-4, "batch_size": 128}
LDAM_DRW_WARMUP = 5
LDAM_DRW_DECAYS = ((0.8, 1e-2), (0.9, 1e-4))  # (fraction of the epochs, lr multiplier)


def ldam_drw_factor(epoch: int, epochs: int) -> float:
    """LDAM-DRW's lr multiplier in ``epoch`` (from 0) of ``epochs``; the warm-up comes first, as
    in the authors' rule (a run of 5 epochs or fewer is all warm-up)."""
    if epoch + 1 <= LDAM_DRW_WARMUP:
        return (epoch + 1) / LDAM_DRW_WARMUP
    factor = 1.0
    for fraction, multiplier in LDAM_DRW_DECAYS:
        if epoch >= round(fraction * epochs):
            factor = multiplier
    return factor


def ldam_drw_schedule(
    opt: torch.optim.Optimizer, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`ldam_drw_factor` stepped once per batch, as the cosine schedule is: constant
    within an epoch, so that a checkpoint resumes it as the cosine one resumes."""
    per_epoch = max(steps_per_epoch, 1)
    last = max(epochs - 1, 0)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: ldam_drw_factor(min(step // per_epoch, last), epochs)
    )
