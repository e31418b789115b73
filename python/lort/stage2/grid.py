"""Grid-batched stage 2: train G heads of one method at once on cached features.

A stage-2 step on cached features is a (batch x D) by (D x K) product forward and backward;
for one head most of its time is PyTorch's per-op overhead. Heads of one method differ only
in numbers (learning rate, weight decay, seed, the method's hyperparameter), so
:func:`train_head_grid` stacks G of them and pays the overhead once per step for all:

* the heads' parameters are stacked along a leading axis of length G; the linear, cosine and
  normed heads run as one head with G*K classes (one product), LWS as its per-class scales
  broadcast over the shared stage-1 logits; the head modules' own ``forward`` is called, via
  ``torch.func.functional_call``, with the stacked parameters;
* each head's loss is the method's own :class:`~lort.methods.SoftmaxLoss`, mapped over the
  heads with ``torch.func.vmap``; a hyperparameter that differs between heads (LORT's delta,
  focal gamma, the class-balanced beta, LDAM's margin or scale) enters as a per-head tensor;
* one backward pass for the sum of the G losses (each head's gradient is that of its own
  loss), then one SGD-with-momentum-0.9 update with each head's learning rate, weight decay
  and cosine schedule, with the semantics of ``torch.optim.SGD`` (``d = g + wd p``; the
  momentum buffer is ``d`` on the first step and ``0.9 buf + d`` after; ``p -= lr_t buf``),
  and after each epoch the method's constraint (MaxNorm with each head's radius, relative to
  its initial class norms);
* batches: heads with the same seed see exactly the batches
  :func:`lort.stage2.loop.train_head_cached` would give each of them alone (the same
  ``randperm``/``multinomial`` and flip draws, from a generator seeded as
  ``torch.manual_seed(seed)`` seeds the global one, which is left alone);
  heads with different seeds train in the same step on their own batches.

Equivalence with :func:`lort.stage2.loop.train_head_cached`: the same draws and the same formulas,
but products and reductions group their floating-point operations differently, so a head
agrees with its lone training to rounding, not bit for bit. ``tests/test_head_grid.py`` checks
every method family: in float64, parameters agree to a relative 1e-9 (about 1e-14 in
practice); in float32, to a relative 1e-4 after a few hundred steps. Longer float32 runs drift
as any two float32 runs of SGD with differently rounded gradients do (relative 1e-5 to 1e-3 of a
weight after thousands of steps), far below the differences between seeds.

Optionally, after every epoch, each head's class-mean accuracy and NLL are measured on a
validation split (and on a test split, recorded, never used for selection) with the method's
inference rule (:func:`lort.methods.inference_logits`: tau-norm, logit adjustment) and, when a
flipped view is given, the mean of the plain and the flipped logits. The head at its best
validation epoch (highest class-mean accuracy, then lowest NLL, then the earliest epoch) is
kept beside the last one.

Memory: heads are trained in chunks of at most :func:`chunk_size` heads, from a byte budget
(:func:`default_memory_budget` unless given) for the stacked parameters, gradients, momentum,
best-epoch copies and activations; evaluation runs over rows in blocks under the same budget.
Everything runs on the features' device.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lort.errors import InputError, LabelError
from lort.methods import (
    Method,
    SoftmaxLoss,
    StageTwoHead,
    inference_logits,
    make_head,
    make_loss,
    make_sampler_weights,
    max_norm_,
    maxnorm_radius,
)
from lort.methods.constraints import check_threshold
from lort.methods.recipes import AUTHORS_TAU, recipe_for
from lort.optim import MOMENTUM, StageConfig, cosine_schedule
from lort.runtime import Progress
from lort.stage2.loop import (
    LOSS_HYPER,
    SMALL_STEP,
    compute_dtype,
    convert_rows,
    gather_rows,
    gather_steps,
    product_into,
    torch_threads,
)
from lort.stage2.select import ValScore, halving_rungs, ranked
from lort.stage2.select import better as is_better

# The SoftmaxLoss fields that a method's hyperparameters set.
LOSS_FIELDS = ("delta", "gamma", "scale", "shift", "margins", "class_weight")


@dataclass(frozen=True)
class HeadConfig:
    """One stage-2 training in a grid: its recipe, seed and method hyperparameters.

    ``hyper`` maps names of ``Method.hyper`` (``smooth``, ``focal_gamma``, ``cb_beta``,
    ``ldam_max_margin``, ``ldam_scale``, ``threshold``, ``tau``) to values; a name left out
    takes the authors' value from the method's recipe (:mod:`lort.methods.recipes`).
    ``tau`` changes only evaluation: configurations differing in it alone train one head,
    scored once per tau.
    """

    stage: StageConfig
    seed: int
    hyper: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalSplit:
    """Features of one evaluation split, their flipped view (or None) and the labels."""

    feats: Tensor
    feats_flip: Tensor | None
    labels: Tensor


@dataclass(frozen=True)
class EpochScores:
    """One head's scores after ``epoch`` (1-based) epochs; test scores None when not asked."""

    epoch: int
    val_accuracy: float
    val_nll: float
    test_accuracy: float | None
    test_nll: float | None


@dataclass
class HeadResult:
    """One configuration's outcome: the head after the last epoch and, when a validation
    split was given, the head at ``best_epoch`` with the scores of every epoch."""

    config: HeadConfig
    head: StageTwoHead
    best_head: StageTwoHead | None = None
    best_epoch: int | None = None
    history: list[EpochScores] = field(default_factory=list)
    trained_epochs: int = 0  # the epochs its head trained (fewer when a halving search stopped it)

    def scores(self, last: bool = False) -> EpochScores:
        """The scores of the best epoch (or, with ``last``, of the last one)."""
        if not self.history:
            raise ValueError("scores are recorded only when a validation split is given")
        if last or self.best_epoch is None:
            return self.history[-1]
        return self.history[self.best_epoch - 1]


# ------------------------------------------------------------------------------- memory


def default_memory_budget(device: torch.device) -> int:
    """Bytes the grid may use: half the free memory of a CUDA device, an eighth of the
    physical memory otherwise."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 8


def trainable_numel(method: Method, feature_dim: int, num_classes: int) -> int:
    """Trainable numbers in one head of ``method``."""
    k, d = num_classes, feature_dim
    return {"linear": k * d + k, "cosine": k * d + 1, "normed": k * d, "lws": k}[method.head]


def head_bytes(
    method: Method,
    feature_dim: int,
    num_classes: int,
    batch_size: int,
    *,
    itemsize: int = 4,
    evaluate: bool = False,
) -> int:
    """Estimated bytes one head adds to a training chunk: parameter, gradient, momentum and
    update temporaries (+ a best-epoch copy when evaluating), the weight copies of a
    normalising head or rule, and the loss's activations (about ten batch x K tensors)."""
    k, d = num_classes, feature_dim
    p = trainable_numel(method, d, k)
    weight_copies = 3 * k * d if method.head in ("cosine", "normed") else 0
    if method.inference == "tau-norm" or method.constraint is not None:
        weight_copies += k * d
    return itemsize * (p * (5 if evaluate else 4) + weight_copies + 10 * batch_size * k)


def chunk_size(
    method: Method,
    feature_dim: int,
    num_classes: int,
    batch_size: int,
    budget: int,
    *,
    itemsize: int = 4,
    evaluate: bool = False,
) -> int:
    """The most heads trained together within ``budget`` bytes (at least 1)."""
    per_head = head_bytes(
        method, feature_dim, num_classes, batch_size, itemsize=itemsize, evaluate=evaluate
    )
    return max(1, budget // per_head)


EVAL_COPIES = 6  # (heads x rows x K) tensors alive while scoring a block of rows


def eval_rows(heads: int, num_classes: int, budget: int, itemsize: int = 4) -> int:
    """Rows of an evaluation split scored per product so the logits fit ``budget``."""
    return max(1, budget // (EVAL_COPIES * heads * num_classes * itemsize))


# ------------------------------------------------------------------------------- checks


def _check_inputs(
    method: Method,
    feats: Tensor,
    feats_flip: Tensor | None,
    labels: Tensor,
    counts: np.ndarray,
    configs: Sequence[HeadConfig],
    splits: Sequence[EvalSplit],
) -> None:
    num_classes = counts.size
    if feats.ndim != 2 or not feats.dtype.is_floating_point or len(feats) == 0:
        raise InputError(
            f"training features must be a non-empty 2-D float tensor, got {feats.dtype} "
            f"{tuple(feats.shape)}"
        )
    _check_split(feats, feats_flip, labels, num_classes, "training", feats)
    for s in splits:
        _check_split(s.feats, s.feats_flip, s.labels, num_classes, "evaluation", feats)
    if not configs:
        raise InputError("the grid needs at least one configuration")
    for c in configs:
        if c.stage.epochs < 1 or c.stage.batch_size < 1:
            raise InputError(
                f"a stage-2 configuration needs epochs >= 1 and batch_size >= 1, got {c.stage}"
            )
        unread = sorted(set(c.hyper) - set(method.hyper))
        if unread:
            reads = ", ".join(method.hyper) or "no hyperparameters"
            raise InputError(f"method {method.name!r} reads {reads}; got {', '.join(unread)}")
        if "threshold" in c.hyper:
            check_threshold(c.hyper["threshold"])
        make_loss(method, counts, **_loss_hyper(c))  # its checks, before any training


def _check_split(
    x: Tensor, x_flip: Tensor | None, y: Tensor, k: int, what: str, train: Tensor
) -> None:
    if x.ndim != 2 or x.shape[1] != train.shape[1] or x.dtype != train.dtype:
        raise InputError(
            f"{what} features must be (N, {train.shape[1]}) {train.dtype}, "
            f"got {tuple(x.shape)} {x.dtype}"
        )
    if x.device != train.device:
        raise InputError(f"{what} features are on {x.device}, the training ones on {train.device}")
    if x_flip is not None and (x_flip.shape != x.shape or x_flip.dtype != x.dtype):
        raise InputError(
            f"the flipped {what} view is {tuple(x_flip.shape)} {x_flip.dtype}, "
            f"the plain one {tuple(x.shape)} {x.dtype}"
        )
    if y.ndim != 1 or y.dtype.is_floating_point or len(y) != len(x):
        raise LabelError(
            f"{what} labels must be a 1-D integer tensor of {len(x)}, got {y.dtype} {y.shape}"
        )
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        raise LabelError(f"{what} labels must lie in [0, {k})")


# --------------------------------------------------------------------------------- grid


def train_head_grid(
    method: Method,
    feats: Tensor,
    feats_flip: Tensor | None,
    labels: Tensor,
    train_counts: npt.ArrayLike,
    init: nn.Linear | None,
    configs: Sequence[HeadConfig],
    *,
    val: EvalSplit | None = None,
    test: EvalSplit | None = None,
    memory_budget: int | None = None,
    progress: Progress | None = None,
    halving: bool = False,
) -> list[HeadResult]:
    """Train one head of ``method`` per configuration, as many at once as the memory budget
    allows (see the module docstring); results in the order of ``configs``.

    The arguments before ``configs`` are those of :func:`lort.stage2.loop.train_head_cached`.
    ``val`` turns on per-epoch evaluation and best-epoch selection, ``test`` adds test
    scores to each epoch's record (it needs ``val``). ``progress`` is called after every
    epoch of a chunk with the steps done and to do over all chunks (as "stage 2") and the
    mean loss and batch accuracy of the chunk's heads' last step.
    ``halving`` (it needs ``val`` and configurations of one epoch count) stops the
    configurations that validation rules out at the rungs of
    :func:`lort.stage2.select.halving_rungs`; a stopped configuration's result holds the
    epochs it trained (a survivor trains exactly as in the full grid, to rounding).
    """
    if test is not None and val is None:
        raise InputError("test scores are recorded beside validation ones: pass val too")
    if halving and (val is None or len({c.stage.epochs for c in configs}) > 1):
        raise InputError("a halving search scores on validation configurations of one length")
    counts = np.asarray(train_counts)
    k = counts.size
    splits = [s for s in (val, test) if s is not None]
    _check_inputs(method, feats, feats_flip, labels, counts, configs, splits)
    device = feats.device
    budget = default_memory_budget(device) if memory_budget is None else memory_budget
    labels = labels.to(device)

    # Heads that share a recipe shape train together, sorted by seed so that each seed's
    # heads are one slice of the stack.
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(configs):
        shapes.setdefault((c.stage.batch_size, c.stage.epochs), []).append(i)
    results: list[HeadResult | None] = [None] * len(configs)
    planned: list[list[int]] = []
    for (batch, _), members in shapes.items():
        members.sort(key=lambda i: configs[i].seed)
        # tau changes only evaluation: configurations that differ in it alone train one head,
        # scored once per tau.
        units: dict[tuple[object, ...], list[int]] = {}
        for i in members:
            units.setdefault(_training_key(configs[i]), []).append(i)
        most = chunk_size(
            method,
            feats.shape[1],
            k,
            batch,
            budget,
            itemsize=compute_dtype(feats).itemsize,
            evaluate=val is not None,
        )
        if device.type == "cpu" and batch * feats.shape[1] * k >= SMALL_STEP:
            # One head's step is already mostly arithmetic: stacking only makes the update
            # memory-bound (benches/stage2_grid.py at K = 1,000 and 8,142).
            most = 1
        planned += _chunks(list(units.values()), most)
    n = len(labels)
    shape = [configs[chunk[0]].stage for chunk in planned]
    tally = _Tally(progress, sum(st.epochs * math.ceil(n / st.batch_size) for st in shape))
    grids: list[_Grid] = []
    for chunk in planned:
        chunk_configs = [configs[i] for i in chunk]
        grid = _Grid(method, feats, feats_flip, labels, counts, init, chunk_configs)
        grid.index = chunk
        if halving:  # trained below, every chunk in step with the others
            grids.append(grid)
            continue
        grid.train(val, test, budget, grid.epochs, tally)
        for i, result in zip(chunk, grid.results(), strict=True):
            results[i] = result
    if grids:
        assert val is not None
        _halve(grids, val, test, budget, tally, results)
    return [r for r in results if r is not None]


@dataclass
class _Tally:
    """The steps of a whole call, over its chunks, for one progress line: ``total`` is what
    the chunks will train (a halving search takes off what its stopped chunks no longer
    train)."""

    progress: Progress | None
    total: int
    done: int = 0

    def epoch(self, steps: int, loss: float, acc: float) -> None:
        self.done += steps
        if self.progress is not None:
            self.progress("stage 2", self.done, self.total, loss, acc)


def _halve(
    grids: list[_Grid],
    val: EvalSplit,
    test: EvalSplit | None,
    budget: int,
    tally: _Tally,
    results: list[HeadResult | None],
) -> None:
    """Successive halving over the chunks ``grids``: all train to each rung's epoch, then only
    the configurations best so far on validation, over all chunks, train on."""
    resident = sum(g.state_bytes() for g in grids)
    if resident > budget:
        raise InputError(
            f"a halving search holds every configuration's state until its first rung "
            f"({resident / 2**30:.1f} GiB, over the {budget / 2**30:.1f} GiB budget): search "
            "fewer configurations, or use the full search (`lort compare --search full`)"
        )
    epochs = grids[0].epochs
    for epoch, keep in halving_rungs(sum(len(g.configs) for g in grids), epochs):
        for g in grids:
            g.train(val, test, budget, epoch, tally)
        # In the caller's order, so that of equals the first stays.
        where = sorted(
            ((g, j) for g in grids for j in range(len(g.configs))), key=lambda w: w[0].index[w[1]]
        )
        best = ranked([g.best_score(j) for g, j in where])[:keep]
        kept = {(id(where[i][0]), where[i][1]) for i in best}
        for g in grids:
            gone = [j for j in range(len(g.configs)) if (id(g), j) not in kept]
            for i, result in g.stop(gone):
                results[i] = result
            if not g.configs:  # what it would have trained is off the count
                tally.total -= (epochs - epoch) * g.steps
        grids = [g for g in grids if g.configs]
    for g in grids:
        g.train(val, test, budget, epochs, tally)
        for i, result in zip(g.index, g.results(), strict=True):
            results[i] = result


def head_epochs(results: Sequence[HeadResult]) -> int:
    """The epochs the heads behind ``results`` trained, summed over the heads (configurations
    that differ in tau alone share one)."""
    trained: dict[tuple[object, ...], int] = {}
    for r in results:
        key = _training_key(r.config)
        trained[key] = max(trained.get(key, 0), r.trained_epochs)
    return sum(trained.values())


def full_head_epochs(configs: Sequence[HeadConfig]) -> int:
    """The epochs a full search of ``configs`` trains: every head to its last epoch."""
    trained = {_training_key(c): c.stage.epochs for c in configs}
    return sum(trained.values())


def _training_key(config: HeadConfig) -> tuple[object, ...]:
    """What a configuration's training depends on: all of it but tau."""
    hyper = tuple(sorted((k, v) for k, v in config.hyper.items() if k != "tau"))
    return (dataclasses.astuple(config.stage), config.seed, hyper)


def _chunks(units: list[list[int]], most: int) -> list[list[int]]:
    """Consecutive units (the configurations sharing one training) in chunks of at most
    ``most`` configurations each (a unit larger than that alone), as even as they come."""
    total = sum(len(u) for u in units)
    size = math.ceil(total / math.ceil(total / most)) if total else 0
    chunks: list[list[int]] = []
    for unit in units:
        if chunks and len(chunks[-1]) + len(unit) <= size:
            chunks[-1] += unit
        else:
            chunks.append(list(unit))
    return chunks


@dataclass
class _SeedGroup:
    """The heads of one seed: a slice of the stack, their generator and initial head."""

    seed: int
    heads: slice
    generator: torch.Generator
    template: StageTwoHead
    ys: Tensor | None = None  # this epoch's labels, rows and flip draws
    rows: Tensor | None = None
    flipped: Tensor | None = None
    xs: Tensor | None = None  # the gathered rows of the block of steps under way


class _Inference(nn.Module):
    """``inference_logits`` as a module, so that ``functional_call`` can swap in one head's
    parameters and tau under ``vmap``."""

    def __init__(self, method: Method, head: StageTwoHead, counts: np.ndarray) -> None:
        super().__init__()
        self.method, self.head, self.counts = method, head, counts
        self.register_buffer("tau", torch.tensor(AUTHORS_TAU))

    def forward(self, x: Tensor) -> Tensor:
        return inference_logits(self.method, self.head, x, self.counts, tau=self.tau)


class _Grid:
    """One chunk of heads trained together (same batch size and epochs)."""

    def __init__(
        self,
        method: Method,
        feats: Tensor,
        feats_flip: Tensor | None,
        labels: Tensor,
        counts: np.ndarray,
        init: nn.Linear | None,
        configs: list[HeadConfig],
    ) -> None:
        self.method, self.labels, self.configs = method, labels, configs
        self.feats, self.feats_flip = feats, feats_flip
        self.n, self.dim = feats.shape
        self.k = counts.size
        self.batch, self.epochs = configs[0].stage.batch_size, configs[0].stage.epochs
        device, dtype = feats.device, compute_dtype(feats)
        self.dtype = dtype
        self.block = gather_steps(self.batch, feats)
        # The heads trained (configurations differing in tau alone share one) and, for each
        # configuration, the index of its trained head.
        first: dict[tuple[object, ...], int] = {}
        self.owner = [first.setdefault(_training_key(c), len(first)) for c in configs]
        trained = [configs[self.owner.index(j)] for j in range(len(first))]
        self.shared = len(trained) < len(configs)
        g = self.trained = len(trained)
        self.groups: list[_SeedGroup] = []
        for i, c in enumerate(trained):
            if self.groups and self.groups[-1].seed == c.seed:
                self.groups[-1].heads = slice(self.groups[-1].heads.start, i + 1)
                continue
            # What train_head_cached draws after torch.manual_seed(seed): the head's own
            # initialisation (without init), then the batches, from this generator.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(c.seed)
                head = make_head(method, self.dim, self.k, init).to(device)
                gen = torch.Generator()
                gen.set_state(torch.get_rng_state())
            wrong = {t.dtype for t in head.state_dict().values()} - {dtype}
            if wrong:
                raise InputError(
                    f"the initial head is {wrong.pop()}; heads on {feats.dtype} features "
                    f"compute in {dtype}: pass init in {dtype}"
                )
            self.groups.append(_SeedGroup(c.seed, slice(i, i + 1), gen, head))
        # The stacked heads run through the first template's forward. Its buffers (LWS's
        # stage-1 weights, the normed head's fixed scale) come from init or are constants,
        # the same for every seed, so they serve all heads.
        self.base = base = self.groups[0].template
        owners = [grp.template for grp in self.groups for _ in range(*grp.heads.indices(g))]
        self.params = {
            name: torch.stack([h.get_parameter(name).detach() for h in owners]).requires_grad_()
            for name, _ in base.named_parameters()
        }
        self.momentum: dict[str, Tensor] = {}
        weights = make_sampler_weights(method, labels.cpu().numpy())
        self.sample_weights = None if weights is None else torch.as_tensor(weights)
        self.lr = torch.tensor([c.stage.lr for c in trained], dtype=torch.float64)
        self.wd = torch.tensor([c.stage.weight_decay for c in trained], dtype=dtype, device=device)
        self.decay = any(c.stage.weight_decay != 0.0 for c in trained)
        self.base_loss, self.varying = _stack_losses(method, counts, trained, device, dtype)
        # A per-class constant that differs between heads (LDAM's margins, class-balanced
        # weights) needs each head's loss on its own: vmap over the heads.
        self.per_head = any(v.ndim > 1 for v in self.varying.values())
        # The analytic step's loss with its per-row values, by (first head, end, batch rows).
        self.row_losses: dict[tuple[int, int, int], SoftmaxLoss] = {}
        # A linear head whose loss has an analytic gradient steps without autograd (its graph
        # costs as much as a small head's products), as train_head_cached's linear_step.
        self.analytic = (
            method.head == "linear"
            and not self.per_head
            and set(self.varying) <= {"delta"}
            and self.base_loss.has_logit_grad
        )
        self.loss = vmap(
            lambda z, y, v: dataclasses.replace(self.base_loss, **v)(z, y), in_dims=(1, None, 0)
        )
        if method.constraint == "maxnorm":
            radii = [
                maxnorm_radius(
                    owner.get_parameter("weight"),
                    c.hyper.get("threshold", recipe_for(method.name).hyper["threshold"]),
                )
                for owner, c in zip(owners, trained, strict=True)
            ]
            rows = torch.tensor(radii, dtype=dtype, device=device)
            self.radius_rows: Tensor | None = rows.repeat_interleave(self.k).unsqueeze(1)
        elif method.constraint is not None:
            raise InputError(f"the grid trainer has no batched {method.constraint!r} constraint")
        else:
            self.radius_rows = None
        self.tau = torch.tensor(
            [c.hyper.get("tau", AUTHORS_TAU) for c in configs], dtype=dtype, device=device
        )
        self.inference = _Inference(method, base, counts)
        self.steps = math.ceil(self.n / self.batch)
        # The factor of lort.optim.cosine_schedule at each step.
        self.cosine = cosine_schedule(
            torch.optim.SGD([torch.zeros(0, requires_grad=True)], lr=1.0),
            self.epochs * self.steps,
        ).lr_lambdas[0]
        self.threads = self._threads()
        # Training state: the epochs done, and per configuration its scores of every epoch,
        # its best epoch so far, that epoch's scores and parameters (after the first scoring).
        self.index = list(range(len(configs)))  # the configurations' places in the caller's
        self.epoch = 0
        self.histories: list[list[EpochScores]] = [[] for _ in configs]
        self.best_epoch = torch.zeros(len(configs), dtype=torch.long)
        self.best_acc = torch.full((len(configs),), -math.inf, dtype=torch.float64)
        self.best_nll = torch.full((len(configs),), math.inf, dtype=torch.float64)
        self.best: dict[str, Tensor] | None = None

    def _threads(self) -> int:
        small = self.trained * self.batch * self.dim * self.k < SMALL_STEP
        return 1 if small else torch.get_num_threads()

    # ------------------------------------------------------------------------- training

    def train(
        self,
        val: EvalSplit | None,
        test: EvalSplit | None,
        budget: int,
        until: int,
        tally: _Tally,
    ) -> None:
        """Train every head on from its current epoch to epoch ``until``, scoring each epoch
        on ``val`` (and ``test``) when given."""
        g = len(self.configs)
        rows = eval_rows(g, self.k, budget, self.dtype.itemsize)
        rows = min(rows, convert_rows(self.feats))  # half-precision rows: a block at a time
        if val is not None and self.best is None:
            self.best = {name: p.detach().clone() for name, p in self._scored().items()}
        with torch_threads(self.threads):
            for epoch in range(self.epoch, until):
                self._draw_epoch()
                lrs = self._learning_rates(epoch)
                for i in range(self.steps):
                    loss, acc = self._step(i, lrs[i], last=i + 1 == self.steps)
                for grp in self.groups:  # held no longer than the epoch (halving keeps grids)
                    grp.xs = None
                if self.method.constraint == "maxnorm":
                    with torch.no_grad():
                        assert self.radius_rows is not None
                        max_norm_(self.params["weight"].detach().flatten(0, 1), self.radius_rows)
                self.epoch = epoch + 1
                tally.epoch(self.steps, loss, acc)
                if val is None:
                    continue
                v_acc, v_nll = self._scores(val, rows)
                t_acc, t_nll = self._scores(test, rows) if test is not None else (None, None)
                for j in range(g):
                    self.histories[j].append(
                        EpochScores(
                            epoch + 1,
                            float(v_acc[j]),
                            float(v_nll[j]),
                            None if t_acc is None else float(t_acc[j]),
                            None if t_nll is None else float(t_nll[j]),
                        )
                    )
                better = is_better(v_acc, v_nll, self.best_acc, self.best_nll)
                self.best_acc = torch.where(better, v_acc, self.best_acc)
                self.best_nll = torch.where(better, v_nll, self.best_nll)
                self.best_epoch[better] = epoch + 1
                on = better.to(self.feats.device)
                assert self.best is not None
                for name, p in self._scored().items():
                    mask = on.view(-1, *[1] * (p.ndim - 1))
                    self.best[name] = torch.where(mask, p.detach(), self.best[name])

    def results(self) -> list[HeadResult]:
        """Each configuration's outcome so far, in the order of ``configs``."""
        return [self._result(j) for j in range(len(self.configs))]

    def _result(self, j: int) -> HeadResult:
        own = self.owner[j]
        result = HeadResult(self.configs[j], self._head(own, self.params, own))
        result.trained_epochs = self.epoch
        if self.best is not None:
            result.best_head = self._head(own, self.best, j)
            result.best_epoch = int(self.best_epoch[j])
            result.history = self.histories[j]
        return result

    def best_score(self, j: int) -> ValScore:
        """Configuration ``j``'s best validation score so far."""
        return ValScore(float(self.best_acc[j]), float(self.best_nll[j]))

    def state_bytes(self) -> int:
        """Bytes this chunk holds between epochs: parameters, momentum and best-epoch copies."""
        per = sum(p[0].numel() for p in self.params.values()) * self.dtype.itemsize
        return per * (2 * self.trained + len(self.configs))

    def stop(self, gone: list[int]) -> list[tuple[int, HeadResult]]:
        """Stop the configurations ``gone`` (local indices): their results so far, with their
        indices in the caller's order, and the heads no configuration still needs dropped from
        the stack."""
        out = [(self.index[j], self._result(j)) for j in gone]
        stays = [j for j in range(len(self.configs)) if j not in gone]
        heads = sorted({self.owner[j] for j in stays})
        renumber = {h: i for i, h in enumerate(heads)}
        device = self.feats.device
        at = torch.tensor(heads, dtype=torch.long, device=device)
        with torch.no_grad():
            self.params = {
                n: p.detach().index_select(0, at).requires_grad_() for n, p in self.params.items()
            }
        self.momentum = {n: b.index_select(0, at) for n, b in self.momentum.items()}
        self.lr = self.lr[at.cpu()]
        self.wd = self.wd.index_select(0, at)
        self.varying = {f: v.index_select(0, at) for f, v in self.varying.items()}
        self.row_losses = {}
        if self.radius_rows is not None:
            self.radius_rows = self.radius_rows.view(-1, self.k)[at].reshape(-1, 1)
        groups = []
        for grp in self.groups:
            mine = [renumber[h] for h in heads if grp.heads.start <= h < grp.heads.stop]
            if mine:
                grp.heads = slice(mine[0], mine[-1] + 1)
                groups.append(grp)
        self.groups = groups
        self.trained = len(heads)
        self.decay = bool((self.wd != 0).any())
        rows = torch.tensor(stays, dtype=torch.long)
        self.configs = [self.configs[j] for j in stays]
        self.index = [self.index[j] for j in stays]
        self.owner = [renumber[self.owner[j]] for j in stays]
        self.shared = self.trained < len(self.configs)
        self.tau = self.tau.index_select(0, rows.to(device))
        self.histories = [self.histories[j] for j in stays]
        self.best_epoch, self.best_acc = self.best_epoch[rows], self.best_acc[rows]
        self.best_nll = self.best_nll[rows]
        if self.best is not None:
            self.best = {n: b.index_select(0, rows.to(device)) for n, b in self.best.items()}
        self.threads = self._threads()
        return out

    def _draw_epoch(self) -> None:
        """Each seed's batch order and flip draws for one epoch, as train_head_cached draws."""
        device = self.feats.device
        for grp in self.groups:
            if self.sample_weights is None:
                order = torch.randperm(self.n, generator=grp.generator)
            else:
                order = torch.multinomial(
                    self.sample_weights, self.n, replacement=True, generator=grp.generator
                )
            grp.ys = self.labels[order.to(device)]
            if self.feats_flip is not None:
                grp.flipped = (torch.rand(self.n, generator=grp.generator) < 0.5).to(device)
            grp.rows = order.to(device)

    def _learning_rates(self, epoch: int) -> Tensor:
        """(steps, heads): minus each head's learning rate at each step of ``epoch``, as the
        SGD of lort.optim.sgd reads it (base lr times the cosine factor, in Python floats)."""
        t = range(epoch * self.steps, (epoch + 1) * self.steps)
        factors = torch.tensor([self.cosine(s) for s in t], dtype=torch.float64)
        lrs = factors.unsqueeze(1) * self.lr
        return lrs.to(self.feats.device, self.wd.dtype).neg_()

    def _step(self, i: int, lr: Tensor, last: bool) -> tuple[float, float]:
        """Batch ``i`` of this epoch for every head, ``lr`` minus their learning rates; the
        mean loss and batch accuracy over the heads when ``last`` (else NaN: reading them
        back costs a sync)."""
        batch = slice(i * self.batch, (i + 1) * self.batch)
        whole = len(self.groups) == 1
        losses, hits = [], []
        for grp in self.groups:
            assert grp.rows is not None and grp.ys is not None
            if i % self.block == 0:
                span = slice(i * self.batch, (i + self.block) * self.batch)
                mirror = None if grp.flipped is None else grp.flipped[span]
                grp.xs = gather_rows(self.feats, self.feats_flip, grp.rows[span], mirror)
            assert grp.xs is not None
            j = i % self.block
            x, y = grp.xs[j * self.batch : (j + 1) * self.batch], grp.ys[batch]
            params = self.params if whole else {n: p[grp.heads] for n, p in self.params.items()}
            if self.analytic:
                z = self._linear_grad(params, x, y, grp.heads)
                if last:  # the loss for the progress line only
                    with torch.no_grad():
                        losses.append(self._loss(z, y, grp.heads))
            else:
                z = self._logits(params, x)
                losses.append(self._loss(z, y, grp.heads))
            if last:
                hits.append((z.detach().argmax(-1) == y.unsqueeze(1)).float().mean(0))
        loss = None
        if losses:
            loss = losses[0] if whole else torch.stack(losses).sum()
        if not self.analytic:
            assert loss is not None
            loss.backward()
        self._update(lr)
        if not last:
            return math.nan, math.nan
        assert loss is not None
        return loss.item() / self.trained, torch.cat(hits).mean().item()

    @torch.no_grad()
    def _linear_grad(
        self, params: Mapping[str, Tensor], x: Tensor, y: Tensor, heads: slice
    ) -> Tensor:
        """The linear heads ``params`` (rows ``heads`` of the stack) on batch ``x``: their
        (batch, heads, K) logits, with the gradient of their summed losses written into the
        stack's ``.grad`` rows ``heads`` (:meth:`SoftmaxLoss.logit_grad`, no autograd)."""
        w, b = params["weight"], params["bias"]
        g, k, d = w.shape
        z = torch.addmm(b.flatten(), x, w.flatten(0, 1).t())
        key = (heads.start, heads.stop, len(x))
        loss = self.row_losses.get(key)
        if loss is None:  # built once per batch shape: its per-row values cost a step's copy
            rows = {f: v[heads].repeat(len(x)).unsqueeze(1) for f, v in self.varying.items()}
            loss = dataclasses.replace(self.base_loss, **rows) if rows else self.base_loss
            self.row_losses[key] = loss
        ys = y if g == 1 else y.repeat_interleave(g)
        # Each head's loss is the mean over the batch, the sum over heads: 1 / batch a row.
        dz = loss.logit_grad(z.view(-1, k), ys, rows=len(x)).view(len(x), g * k)
        # Into the same gradient tensors every step (as linear_step; _update leaves them).
        for p in self.params.values():
            if p.grad is None:
                p.grad = torch.empty_like(p)
        grad_w, grad_b = self.params["weight"].grad, self.params["bias"].grad
        assert grad_w is not None and grad_b is not None
        product_into(grad_w[heads].view(g * k, d), dz.t(), x)
        torch.sum(dz, 0, out=grad_b[heads].view(g * k))
        return z.view(len(x), g, k)

    def _logits(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """(batch, heads, K) logits of the stacked heads, through the head's own forward."""
        if self.method.head == "lws":  # per-class scales broadcast over the stage-1 logits
            scales = {"scales": params["scales"]}
            return functional_call(self.base, scales, (x.unsqueeze(1),), tie_weights=False)
        # The other heads act row by row on the weight: G heads are one head of G*K classes.
        wide = {"weight": params["weight"].flatten(0, 1)}
        if "bias" in params:
            wide["bias"] = params["bias"].flatten()
        if "scale" in params:  # the cosine head's learnt scale, one per head
            wide["scale"] = params["scale"].repeat_interleave(self.k)
        # No head ties weights: tie_weights=False skips functional_call's search for them,
        # a per-step cost as large as a small head's product.
        return functional_call(self.base, wide, (x,), tie_weights=False).unflatten(1, (-1, self.k))

    def _loss(self, z: Tensor, y: Tensor, heads: slice) -> Tensor:
        """The sum over heads of each one's loss on its logits ``z[:, h]`` and labels ``y``."""
        varying = {f: v[heads] for f, v in self.varying.items()}
        if self.per_head:
            return self.loss(z, y, varying).sum()
        # The heads share the batch and every per-class constant: one loss over all their
        # rows, times the number of heads, is the sum of their losses (each row's gradient
        # is the same 1 / batch); a hyperparameter that differs is one value per row.
        b, g, k = z.shape
        if not varying:
            ys = y if g == 1 else y.repeat_interleave(g)
            loss = self.base_loss(z.reshape(b * g, k), ys)
            return loss if g == 1 else loss * g
        rows = {f: v.repeat(b).unsqueeze(1) for f, v in varying.items()}
        return (
            dataclasses.replace(self.base_loss, **rows)(z.reshape(b * g, k), y.repeat_interleave(g))
            * g
        )

    @torch.no_grad()
    def _update(self, lr: Tensor) -> None:
        """torch.optim.SGD (momentum 0.9, per-head lr and weight decay)."""
        for name, p in self.params.items():
            shape = (-1, *[1] * (p.ndim - 1))
            grad = p.grad
            assert grad is not None
            if not self.analytic:  # the analytic step writes into the same tensors
                p.grad = None
            d_p = grad.addcmul(p, self.wd.view(shape)) if self.decay else grad
            buf = self.momentum.get(name)
            if buf is None:
                self.momentum[name] = buf = d_p.clone()
            else:
                buf.mul_(MOMENTUM).add_(d_p)
            p.addcmul_(buf, lr.view(shape))

    # ------------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def _scores(self, split: EvalSplit, rows: int) -> tuple[Tensor, Tensor]:
        """Per head: class-mean accuracy and mean NLL (float64, on the CPU) of the split's
        inference logits (flip-averaged when a flipped view is given)."""
        device = self.feats.device
        g = len(self.configs)
        params = {f"head.{n}": p for n, p in self._scored().items()}

        def one(p: dict[str, Tensor], tau: Tensor, x: Tensor) -> Tensor:
            return functional_call(self.inference, {**p, "tau": tau}, (x,), tie_weights=False)

        logits = vmap(one, in_dims=(0, 0, None))
        labels = split.labels.to(device)
        hits = torch.zeros(g, self.k, dtype=torch.float64, device=device)
        nll = torch.zeros(g, dtype=torch.float64, device=device)
        diverged = torch.zeros(g, dtype=torch.bool, device=device)
        for start in range(0, len(labels), rows):
            block = slice(start, start + rows)
            z = logits(params, self.tau, split.feats[block].to(self.dtype))
            if split.feats_flip is not None:  # in place: z is (heads, rows, K), often GBs
                z.add_(logits(params, self.tau, split.feats_flip[block].to(self.dtype))).mul_(0.5)
            y = labels[block]
            # Each row's NLL from log_softmax over the contiguous class axis (5x faster than
            # cross_entropy over the transposed (heads, K, rows) view at K = 1,000); a NaN or
            # infinite logit makes it NaN or infinite, so it also flags a diverged head.
            at = y.view(1, -1, 1).expand(g, -1, 1)
            row_nll = -F.log_softmax(z, -1).gather(-1, at).squeeze(-1)
            diverged |= ~torch.isfinite(row_nll).all(1)
            nll += row_nll.sum(1, dtype=torch.float64)
            hits.index_add_(1, y, (z.argmax(-1) == y).to(torch.float64))
        per_class = torch.bincount(labels, minlength=self.k).to(torch.float64)
        present = per_class > 0
        accuracy = (hits[:, present] / per_class[present]).mean(1)
        nll = nll / max(len(labels), 1)
        # A head whose learning rate made it diverge (logits not finite: the top of a
        # search's grid) predicts nothing: accuracy 0 and an infinite NLL, never chosen over
        # one that trained.
        accuracy = torch.where(diverged, 0.0, accuracy)
        nll = torch.where(diverged, math.inf, nll)
        return accuracy.cpu(), nll.cpu()

    def _scored(self) -> dict[str, Tensor]:
        """The trained parameters, detached, one row per configuration (a trained head
        repeated for each of its taus)."""
        if not self.shared:
            return {n: p.detach() for n, p in self.params.items()}
        index = torch.tensor(self.owner, device=self.feats.device)
        return {n: p.detach().index_select(0, index) for n, p in self.params.items()}

    def _head(self, j: int, state: Mapping[str, Tensor], row: int) -> StageTwoHead:
        """Trained head ``j`` as a module of its own, with row ``row`` of ``state``'s
        parameters, in eval mode."""
        grp = next(g for g in self.groups if g.heads.start <= j < g.heads.stop)
        head = copy.deepcopy(grp.template)
        with torch.no_grad():
            for name, p in head.named_parameters():
                p.copy_(state[name][row])
        return head.eval()


def _loss_hyper(config: HeadConfig) -> dict[str, float]:
    """The configuration's keywords of make_loss."""
    return {h: v for h, v in config.hyper.items() if h in LOSS_HYPER}


def _stack_losses(
    method: Method,
    counts: np.ndarray,
    configs: list[HeadConfig],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[SoftmaxLoss, dict[str, Tensor]]:
    """The method's loss for every configuration (make_loss checks each one's values): the
    fields all share, in one SoftmaxLoss, and the others stacked per head (vmap's axis 0)."""
    losses = [make_loss(method, counts, **_loss_hyper(c)) for c in configs]
    first = losses[0]
    if not all(isinstance(loss, SoftmaxLoss) for loss in losses):
        raise InputError(f"the grid trainer needs a SoftmaxLoss, got {type(first).__name__}")
    shared: dict[str, Tensor] = {}
    varying: dict[str, Tensor] = {}
    for name in LOSS_FIELDS:
        values = [getattr(loss, name) for loss in losses]
        if values[0] is None:
            continue
        if isinstance(values[0], Tensor):  # precomputed per class: prior, margins, weights
            if all(torch.equal(v, values[0]) for v in values):
                shared[name] = values[0].to(device, dtype)
            else:
                varying[name] = torch.stack(values).to(device, dtype)
        elif any(v != values[0] for v in values):
            varying[name] = torch.tensor(values, dtype=dtype, device=device)
    assert isinstance(first, SoftmaxLoss)
    return dataclasses.replace(first, **shared), varying
