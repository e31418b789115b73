"""Stage 2's head loops: one classifier re-trained with a method on frozen features, either on
cached features (``cached``) or with the frozen backbone in the loop (``live``), with SGD,
momentum and a per-step cosine schedule (:mod:`lort.optim`)."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from lort.methods import (
    LinearHead,
    LossFn,
    Method,
    SoftmaxLoss,
    apply_constraint,
    constraint_radius,
    make_head,
    make_loss,
    make_sampler_weights,
)
from lort.optim import StageConfig, cosine_schedule, sgd
from lort.runtime import Progress, Runtime
from lort.stage1.loop import autocast
from lort.stage1.losses import stage1_init


def head_step(
    head: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[Callable[[], float], Callable[[], float]]:
    """One stage-2 step: loss, update, schedule. Returns callables for the loss and the batch
    accuracy (read back only when someone displays them)."""
    logits = head(x)
    loss = loss_fn(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return loss.item, lambda: (logits.argmax(1) == y).float().mean().item()


def product_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``out = a @ b`` written into ``out`` (the step's gradient tensors are reused: a fresh
    one a step costs its page faults, at K = 1,000 and D = 2,048 a third of a step). Under
    autocast the product runs in autocast's precision and is copied in."""
    if torch.is_autocast_enabled(a.device.type):
        out.copy_(a.mm(b))
    else:
        torch.mm(a, b, out=out)


def linear_step(
    head: LinearHead,
    loss_fn: SoftmaxLoss,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[Callable[[], float], Callable[[], float]]:
    """:func:`head_step` for a linear head whose loss has an analytic gradient
    (:meth:`SoftmaxLoss.logit_grad`): the same update without autograd's graph, which at a
    small head costs as much as the step's products (docs/performance.md)."""
    with torch.no_grad():
        logits = torch.addmm(head.bias, x, head.weight.t())
        dz = loss_fn.logit_grad(logits, y)
        # Into the same gradient tensors every step (SGD reads them, never keeps them).
        for p in (head.weight, head.bias):
            if p.grad is None:
                p.grad = torch.empty_like(p)
        product_into(head.weight.grad, dz.t(), x)
        torch.sum(dz, 0, out=head.bias.grad)
    opt.step()
    sched.step()
    return (
        lambda: float(loss_fn(logits, y)),
        lambda: (logits.argmax(1) == y).float().mean().item(),
    )


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
# Bytes of training rows gathered at a time (a few steps' rows), by the cached loop and the
# grid: a block that stays in the CPU's cache until its steps read it (64 MiB blocks ran the
# estimator's stage 2 about 15% slower than gathering each step's rows, benches/estimator_scale.py).
GATHER_BYTES = 1 << 20
# Bytes of half-precision rows converted to float32 at a time for scoring and inference.
CONVERT_BYTES = 64 << 20
# Seconds between the cached loop's progress reports within an epoch.
REPORT_S = 0.1


def compute_dtype(feats: torch.Tensor) -> torch.dtype:
    """The dtype a head computes in on ``feats``: theirs, float32 for a half-precision cache
    (converted block by block as rows are read, never whole)."""
    return torch.float32 if feats.dtype in (torch.float16, torch.bfloat16) else feats.dtype


def gather_steps(batch_size: int, feats: torch.Tensor) -> int:
    """Steps whose rows are gathered at once (GATHER_BYTES of them, at least one step)."""
    return max(1, GATHER_BYTES // (batch_size * feats.shape[1] * compute_dtype(feats).itemsize))


def convert_rows(feats: torch.Tensor) -> int:
    """Rows of ``feats`` read at a time where they must be converted (CONVERT_BYTES of
    them), or all of them where they are used as they are."""
    dtype = compute_dtype(feats)
    if feats.dtype == dtype:
        return max(1, len(feats))
    return max(1, CONVERT_BYTES // (feats.shape[1] * dtype.itemsize))


def gather_rows(
    feats: torch.Tensor,
    feats_flip: torch.Tensor | None,
    rows: torch.Tensor,
    mirror: torch.Tensor | None,
) -> torch.Tensor:
    """Rows ``rows`` of the features, each from the mirrored view where ``mirror`` says so,
    as a new tensor in :func:`compute_dtype` (the features, perhaps mapped from the run's
    cache, are never copied whole)."""
    xs = feats.index_select(0, rows)  # faster than advanced indexing and a masked assignment
    if feats_flip is not None and mirror is not None:
        at = mirror.nonzero().squeeze(1)
        xs.index_copy_(0, at, feats_flip.index_select(0, rows.index_select(0, at)))
    return xs.to(compute_dtype(feats))


# make_loss's keywords among a method's hyperparameters (the others are the constraint's
# threshold and the inference rule's tau).
LOSS_HYPER = frozenset(inspect.signature(make_loss).parameters) - {"method", "train_counts"}


def _constraint_and_loss(
    method: Method,
    head: nn.Module,
    train_counts: np.ndarray,
    smooth: float,
    hyper: Mapping[str, float] | None,
) -> tuple[float, LossFn]:
    """The head's MaxNorm radius and its loss, with ``hyper`` where given and the method's
    recipe (its authors' values) for the rest."""
    hyper = dict(hyper or {})
    radius = constraint_radius(method, head, hyper.get("threshold"))
    loss_hyper = {k: v for k, v in hyper.items() if k in LOSS_HYPER and k != "smooth"}
    return radius, make_loss(method, train_counts, smooth=smooth, **loss_hyper)


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
    hyper: Mapping[str, float] | None = None,
    progress: Progress | None = None,
) -> nn.Module:
    """Re-train a classifier on cached features (from ``init``, or freshly initialised
    without it). Each step uses the plain or the flipped view of each sample at random (the
    cache's stand-in for the flip augmentation); the method's constraint after every epoch."""
    torch.manual_seed(seed)
    n, dim = feats.shape
    k = len(train_counts)
    head = make_head(method, dim, k, init)
    radius, loss_fn = _constraint_and_loss(method, head, train_counts, smooth, hyper)
    weights = make_sampler_weights(method, labels.numpy())
    params = [p for p in head.parameters() if p.requires_grad]
    opt = sgd(params, st)
    steps = math.ceil(n / st.batch_size)
    sched = cosine_schedule(opt, st.epochs * steps)
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    threads = 1 if st.batch_size * dim * k < SMALL_STEP else torch.get_num_threads()
    # Rows are gathered for a block of steps at a time (at most GATHER_BYTES): the features,
    # mapped from the run's cache, are never copied whole.
    block = gather_steps(st.batch_size, feats)
    analytic = isinstance(head, LinearHead) and isinstance(loss_fn, SoftmaxLoss)
    step = linear_step if analytic and loss_fn.has_logit_grad else head_step
    reported = -math.inf
    with torch_threads(threads):
        for epoch in range(st.epochs):
            order = torch.randperm(n) if w is None else torch.multinomial(w, n, replacement=True)
            ys = labels[order]
            flipped = None if feats_flip is None else torch.rand(n) < 0.5
            for i in range(steps):
                if i % block == 0:
                    span = slice(i * st.batch_size, (i + block) * st.batch_size)
                    mirror = None if flipped is None else flipped[span]
                    xs = gather_rows(feats, feats_flip, order[span], mirror)
                j = i % block
                x = xs[j * st.batch_size : (j + 1) * st.batch_size]
                y = ys[i * st.batch_size : (i + 1) * st.batch_size]
                loss, acc = step(head, loss_fn, opt, sched, x, y)
                # Reading the loss and accuracy back (an argmax over batch x K) and drawing the
                # line cost as much as a small step: after the first step, then at most every
                # REPORT_S and at each epoch's end.
                now = time.perf_counter()
                if progress is not None and (i + 1 == steps or now - reported >= REPORT_S):
                    reported = now
                    progress("stage 2", epoch * steps + i + 1, st.epochs * steps, loss(), acc())
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
    hyper: Mapping[str, float] | None = None,
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
    radius, loss_fn = _constraint_and_loss(method, head, train_counts, smooth, hyper)
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
                progress("stage 2", epoch * len(loader) + i + 1, total, loss(), acc())
        apply_constraint(method, head, radius)
    backbone.eval()
    return head.eval()
