"""Stage 1: backbone and classifier trained together with a (by default plain cross-entropy)
loss and weight decay, SGD with momentum and a per-step cosine schedule, or LDAM-DRW's warm-up
and step decay (:mod:`lort.optim`), a checkpoint after every epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lort.data.tensor_images import TensorImages, epoch_seed
from lort.optim import StageConfig, cosine_schedule, ldam_drw_schedule, sgd
from lort.runtime import Progress, Runtime
from lort.stage1.losses import make_stage1_loss


def autocast(device: torch.device) -> torch.autocast | nullcontext[None]:
    """bf16 autocast on CUDA; full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class Stage1State:
    """Everything a stage-1 checkpoint holds (one dict, nanoGPT style)."""

    model: dict
    optimizer: dict
    scheduler: dict
    epoch: int  # epochs completed
    # One record per completed epoch: its mean training loss and accuracy (over this rank's
    # batches, as the model was while it trained) and the learning rate it ended at.
    history: list[dict[str, float]] = field(default_factory=list)


def stage1_loader(
    ds: Dataset,
    st: StageConfig,
    rt: Runtime,
    seed: int,
    epoch: int,
    workers: int,
    drop_last: bool = False,
) -> DataLoader:
    """Shuffled batches; the order depends only on (seed, epoch), so a resumed
    run sees the same batches as an uninterrupted one."""
    b = st.batch_size
    if rt.distributed:
        sampler = DistributedSampler(ds, rt.world, rt.rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return DataLoader(
            ds, batch_size=b, sampler=sampler, num_workers=workers, drop_last=drop_last
        )
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return DataLoader(
        ds, batch_size=b, shuffle=True, generator=g, num_workers=workers, drop_last=drop_last
    )


TrainSet = Dataset | TensorImages


def epoch_batches(
    train_set: TrainSet,
    st: StageConfig,
    rt: Runtime,
    seed: int,
    epoch: int,
    workers: int,
    drop_last: bool = False,
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (images, labels): augmented on the device for in-memory images,
    through a DataLoader otherwise."""
    if isinstance(train_set, TensorImages):
        return train_set.epoch(st.batch_size, seed, epoch, rt.rank, rt.world, drop_last)
    return stage1_loader(train_set, st, rt, seed, epoch, workers, drop_last)


def steps_per_epoch(
    train_set: TrainSet, st: StageConfig, rt: Runtime, seed: int, drop_last: bool = False
) -> int:
    if isinstance(train_set, TensorImages):
        return train_set.steps(st.batch_size, rt.world, drop_last)
    return len(stage1_loader(train_set, st, rt, seed, 0, 0, drop_last))


# On CUDA, progress is read back every this many steps: reading a loss waits for the GPU, and
# each small op of bookkeeping costs as much host time as a kernel launch.
CUDA_SYNC_EVERY = 50


def stage1_params(
    model: nn.Module, st: StageConfig, freeze_backbone: bool, backbone_lr_scale: float
) -> Iterable[nn.Parameter] | list[dict[str, Any]]:
    """What stage 1's optimiser updates: every parameter at ``st.lr``, or the head alone
    (``freeze_backbone``), or the backbone at ``backbone_lr_scale`` times the rate."""
    if not freeze_backbone and backbone_lr_scale == 1.0:
        return model.parameters()  # one group, as the checkpoints of earlier runs hold
    groups: list[dict[str, Any]] = [{"params": list(model.head.parameters())}]
    if not freeze_backbone:
        groups.append(
            {"params": list(model.backbone.parameters()), "lr": st.lr * backbone_lr_scale}
        )
    return groups


def train_stage1(
    model: nn.Module,
    train_set: TrainSet,
    train_counts: np.ndarray,
    st: StageConfig,
    loss_name: str,
    rt: Runtime,
    *,
    seed: int,
    workers: int,
    resume: Stage1State | None,
    checkpoint: Callable[[Stage1State], None],
    progress: Progress,
    compile_model: bool = False,
    freeze_backbone: bool = False,
    backbone_lr_scale: float = 1.0,
    schedule: str = "cosine",
) -> int:
    """Stage 1: SGD with a per-step cosine schedule (``schedule="ldam-drw"``: LDAM-DRW's,
    :func:`lort.optim.ldam_drw_factor`), a checkpoint after every epoch.
    ``compile_model`` runs the network through ``torch.compile`` (with CUDA graphs on a
    GPU) and drops each epoch's last, short batch so that one batch shape is compiled; the
    weights and checkpoints are those of ``model`` either way. Fine-tuning a pretrained
    backbone: ``freeze_backbone`` trains the head alone (the backbone in eval mode, so its
    BatchNorm statistics stay too), ``backbone_lr_scale`` gives the backbone that fraction of
    the learning rate. With 0 epochs (linear probing) the starting model is checkpointed as it
    is. Returns the number of images trained on (this rank, this call)."""
    if st.epochs == 0:
        checkpoint(Stage1State(model.state_dict(), {}, {}, 0))
        return 0
    if freeze_backbone:  # before DistributedDataParallel registers what it reduces
        model.backbone.requires_grad_(False)
    cuda = rt.device.type == "cuda"
    model.to(rt.device)
    if cuda:
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    net: nn.Module = model
    if rt.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if cuda else None
        )
    if compile_model:
        net = torch.compile(net, mode="reduce-overhead" if cuda else None, dynamic=False)  # type: ignore[assignment]
    drop = compile_model
    per_epoch = steps_per_epoch(train_set, st, rt, seed, drop)
    opt = sgd(stage1_params(model, st, freeze_backbone, backbone_lr_scale), st, fused=cuda)
    if schedule == "ldam-drw":
        sched = ldam_drw_schedule(opt, st.epochs, per_epoch)
    elif schedule == "cosine":
        sched = cosine_schedule(opt, st.epochs * per_epoch)
    else:
        raise ValueError(f"unknown stage-1 schedule {schedule!r}")
    start = 0
    if resume is not None:
        model.load_state_dict(resume.model)
        opt.load_state_dict(resume.optimizer)
        sched.load_state_dict(resume.scheduler)
        start = resume.epoch
    total = st.epochs * per_epoch
    every = CUDA_SYNC_EVERY if cuda else 1
    images = 0
    history = [] if resume is None else list(resume.history)
    for epoch in range(start, st.epochs):
        torch.manual_seed(epoch_seed(seed, epoch))  # augmentation draws
        loss_fn = make_stage1_loss(loss_name, train_counts, epoch, st.epochs)
        net.train()
        if freeze_backbone:
            model.backbone.eval()
        loss_sum = torch.zeros((), device=rt.device)  # read once an epoch: no sync per step
        correct = torch.zeros((), device=rt.device)
        seen = 0
        for i, (x, y) in enumerate(epoch_batches(train_set, st, rt, seed, epoch, workers, drop)):
            x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(rt.device):
                logits = net(x)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += len(y)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if (i + 1) % every == 0 or i + 1 == per_epoch:  # this batch's loss and accuracy
                acc = (logits.argmax(1) == y).float().mean().item()
                progress("stage 1", epoch * per_epoch + i + 1, total, loss.item(), acc)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(loss_sum) / max(seen, 1),
                "accuracy": float(correct) / max(seen, 1),
                "lr": float(sched.get_last_lr()[0]),
            }
        )
        state = Stage1State(
            model.state_dict(), opt.state_dict(), sched.state_dict(), epoch + 1, history
        )
        checkpoint(state)
    return images
