"""The two training stages, each a short loop of single-purpose steps.

Stage 1 trains backbone and classifier with a (by default plain cross-entropy)
loss and weight decay. Stage 2 freezes the backbone and re-trains only the
classifier with one of the re-training methods, either on cached features
(``cached``) or with the backbone in the loop (``live``). Both use SGD with
momentum 0.9 and a per-step cosine schedule to 0."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, WeightedRandomSampler

from lort.config import StageConfig
from lort.data.tensor_images import TensorImages, epoch_seed
from lort.methods import (
    DEFAULT_THRESHOLD,
    Method,
    apply_constraint,
    constraint_radius,
    make_head,
    make_loss,
    make_sampler_weights,
    make_stage1_loss,
    stage1_init,
)
from lort.runtime import Runtime

Progress = Callable[[str, int, int, float, float], None]
"""progress(phase, step, total_steps, loss, accuracy) after every step."""


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
        params, lr=st.lr, momentum=0.9, weight_decay=st.weight_decay, fused=fused or None
    )


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
) -> int:
    """Stage 1: SGD with a per-step cosine schedule, a checkpoint after every epoch.
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
    sched = cosine_schedule(opt, st.epochs * per_epoch)
    start = 0
    if resume is not None:
        model.load_state_dict(resume.model)
        opt.load_state_dict(resume.optimizer)
        sched.load_state_dict(resume.scheduler)
        start = resume.epoch
    total = st.epochs * per_epoch
    every = CUDA_SYNC_EVERY if cuda else 1
    images = 0
    for epoch in range(start, st.epochs):
        torch.manual_seed(epoch_seed(seed, epoch))  # augmentation draws
        loss_fn = make_stage1_loss(loss_name, train_counts, epoch, st.epochs)
        net.train()
        if freeze_backbone:
            model.backbone.eval()
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
            if (i + 1) % every == 0 or i + 1 == per_epoch:  # this batch's loss and accuracy
                acc = (logits.argmax(1) == y).float().mean().item()
                progress("stage 1", epoch * per_epoch + i + 1, total, loss.item(), acc)
        checkpoint(Stage1State(model.state_dict(), opt.state_dict(), sched.state_dict(), epoch + 1))
    return images


def head_step(
    head: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[float, Callable[[], float]]:
    """One stage-2 step: loss, update, schedule. Returns the loss and a callable for the
    batch accuracy (computed only when someone displays it)."""
    logits = head(x)
    loss = loss_fn(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item(), lambda: (logits.argmax(1) == y).float().mean().item()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with n intra-op threads (a tiny head's steps are faster on one
    thread than split across several)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Below this many multiply-adds per step, a cached stage-2 step runs on one thread.
SMALL_STEP = 1 << 24


def train_head_cached(
    method: Method,
    feats: torch.Tensor,
    feats_flip: torch.Tensor | None,
    labels: torch.Tensor,
    train_counts: np.ndarray,
    init: nn.Linear | None,
    st: StageConfig,
    *,
    smooth: float,
    seed: int,
    progress: Progress | None = None,
) -> nn.Module:
    """Re-train a classifier on cached features (from ``init``, or freshly initialised
    without it). Each step uses the plain or the flipped view of each sample at random (the
    cache's stand-in for the flip augmentation); the method's constraint after every epoch."""
    torch.manual_seed(seed)
    n, dim = feats.shape
    k = len(train_counts)
    head = make_head(method, dim, k, init)
    radius = constraint_radius(method, head, DEFAULT_THRESHOLD)
    loss_fn = make_loss(method, train_counts, smooth=smooth)
    weights = make_sampler_weights(method, labels.numpy())
    params = [p for p in head.parameters() if p.requires_grad]
    opt = sgd(params, st)
    steps = math.ceil(n / st.batch_size)
    sched = cosine_schedule(opt, st.epochs * steps)
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    threads = 1 if st.batch_size * dim * k < SMALL_STEP else torch.get_num_threads()
    views = None if feats_flip is None else torch.cat([feats, feats_flip])
    with torch_threads(threads):
        for epoch in range(st.epochs):
            order = torch.randperm(n) if w is None else torch.multinomial(w, n, replacement=True)
            ys = labels[order]
            if views is not None:  # row i of the flipped view is row n + i
                order = order + n * (torch.rand(n) < 0.5)
            # One gather per epoch; the steps then slice it.
            xs = (feats if views is None else views)[order]
            for i in range(steps):
                x = xs[i * st.batch_size : (i + 1) * st.batch_size]
                y = ys[i * st.batch_size : (i + 1) * st.batch_size]
                loss, acc = head_step(head, loss_fn, opt, sched, x, y)
                if progress is not None:
                    progress("stage 2", epoch * steps + i + 1, st.epochs * steps, loss, acc())
            apply_constraint(method, head, radius)
    return head.eval()


def train_head_live(
    method: Method,
    model: nn.Module,
    train_set: Dataset,
    train_labels: np.ndarray,
    train_counts: np.ndarray,
    st: StageConfig,
    rt: Runtime,
    *,
    smooth: float,
    bn: str,
    seed: int,
    workers: int,
    progress: Progress | None = None,
) -> nn.Module:
    """Re-train the classifier with the frozen backbone in the loop and
    augmentation on. ``bn="train"`` lets BatchNorm statistics move (as the
    official LORT code does, keeping the model in train mode); ``bn="eval"``
    keeps the backbone exactly as stage 1 left it."""
    torch.manual_seed(seed)
    backbone = model.backbone.to(rt.device)
    for p in backbone.parameters():
        p.requires_grad_(False)
    init = stage1_init(model.head.state_dict(), prefix="")
    head = make_head(method, model.feature_dim, len(train_counts), init).to(rt.device)
    radius = constraint_radius(method, head, DEFAULT_THRESHOLD)
    loss_fn = make_loss(method, train_counts, smooth=smooth)
    weights = make_sampler_weights(method, train_labels)
    g = torch.Generator().manual_seed(seed)
    if weights is None:
        loader = DataLoader(
            train_set, batch_size=st.batch_size, shuffle=True, generator=g, num_workers=workers
        )
    else:
        sampler = WeightedRandomSampler(weights.tolist(), len(weights), generator=g)
        loader = DataLoader(
            train_set, batch_size=st.batch_size, sampler=sampler, num_workers=workers
        )
    params = [p for p in head.parameters() if p.requires_grad]
    opt = sgd(params, st)
    sched = cosine_schedule(opt, st.epochs * len(loader))
    backbone.train(bn == "train")
    total = st.epochs * len(loader)
    for epoch in range(st.epochs):
        for i, (x, y) in enumerate(loader):
            x, y = x.to(rt.device), y.to(rt.device)
            with torch.no_grad(), autocast(rt.device):
                f = backbone(x)
            loss, acc = head_step(head, loss_fn, opt, sched, f.float(), y)
            if progress is not None:
                progress("stage 2", epoch * len(loader) + i + 1, total, loss, acc())
        apply_constraint(method, head, radius)
    backbone.eval()
    return head.eval()
