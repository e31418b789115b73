"""Training losses: one formula covers CE, LORT, focal, LDAM, balanced softmax and the
class-balanced losses.

For logits ``z`` (B x K), labels ``y`` and target rows ``q`` (one-hot or LORT's), with
``u = s * (z + shift - m_y onehot(y))``, a row's loss is, by ``form``:

- ``softmax``: ``l = -sum_k q_k (1 - p_k)^gamma log p_k``, ``p = softmax(u)``;
- ``sigmoid``: ``l = sum_k BCE(sigmoid(u_k), q_k)``, one binary problem per class (the
  class-balanced loss's sigmoid form, Cui et al. 2019, ``src/cifar_main.py`` of their code);
- ``softmax-bce``: ``l = mean_k BCE(p_k, q_k)``, ``p = softmax(u)`` (binary cross-entropy on
  softmax probabilities: the "softmax" CB loss of LTWB's ``utils/class_balanced_loss.py``, which
  MaxNorm trains with).

- CE: ``gamma = 0``, ``s = 1``, no shift, no margin; LORT: the same with ``q`` smoothed.
- focal (Lin et al., 2017): ``gamma > 0``.
- balanced softmax (Ren et al., 2020): ``shift = log prior``, ``prior_j = n_j / sum n``.
- LDAM (Cao et al., 2019): margins ``m_j`` proportional to ``n_j^(-1/4)``, the largest
  (the rarest class's) equal to ``max_margin``, and scale ``s`` (30) on cosine logits.

The batch loss is the mean of ``l``; with per-class weights ``w`` either ``sum w_y l / sum w_y``
(``reduction="weighted-mean"``, the reduction of ``F.cross_entropy(..., weight=w)``, which
LDAM-DRW's DRW uses) or ``sum w_y l / B`` (``"batch-mean"``: the class-balanced loss as its
authors reduce it, TF's ``SUM_BY_NONZERO_WEIGHTS`` in ``src/cifar_main.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from lort.checks import check_counts
from lort.errors import InputError, OptionError
from lort.methods.base import LossKind, Method
from lort.methods.recipes import recipe_for
from lort.methods.targets import check_delta, retarget

LossFn = Callable[[Tensor, Tensor], Tensor]
Form = Literal["softmax", "sigmoid", "softmax-bce"]
Reduction = Literal["weighted-mean", "batch-mean"]
# The floor of F.binary_cross_entropy's logarithms (torch clamps log at -100).
BCE_LOG_FLOOR = -100.0


def log_prior(train_counts: npt.ArrayLike) -> Tensor:
    """``log(n_j / sum n)`` as a float64 tensor of length K."""
    counts = check_counts(train_counts, need_positive="the log prior").astype(np.float64)
    return torch.from_numpy(np.log(counts / counts.sum()))


def class_balanced_weights(train_counts: npt.ArrayLike, beta: float = 0.9999) -> Tensor:
    """Cui et al. (2019): ``w_j = (1 - beta) / (1 - beta^n_j)``, scaled to sum to K (float64)."""
    if not 0.0 <= beta < 1.0:
        raise InputError(f"the class-balanced beta must lie in [0, 1), got {beta}")
    counts = check_counts(train_counts, need_positive="the effective number").astype(np.float64)
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return torch.from_numpy(weights * counts.size / weights.sum())


def ldam_margins(train_counts: npt.ArrayLike, max_margin: float = 0.5) -> Tensor:
    """LDAM margins ``m_j = C n_j^(-1/4)`` with ``C`` such that ``max_j m_j = max_margin``."""
    if not max_margin >= 0.0:
        raise InputError(f"the LDAM max margin must be non-negative, got {max_margin}")
    counts = check_counts(train_counts, need_positive="LDAM").astype(np.float64)
    margins = counts**-0.25
    return torch.from_numpy(margins * (max_margin / margins.max()))


@dataclass(frozen=True, eq=False)
class SoftmaxLoss:
    """The formula of the module docstring as a callable ``(logits, labels) -> scalar``.

    ``delta``, ``gamma`` and ``scale`` may also be tensors, for ``lort.stage2.grid``'s grids of
    heads: (rows, 1), one value per row of the logits, or 0-d under ``torch.func.vmap``; the
    loss then takes the general path below instead of torch's fused kernel.
    """

    num_classes: int
    delta: float | Tensor = 0.0
    gamma: float | Tensor = 0.0
    scale: float | Tensor = 1.0
    shift: Tensor | None = None
    margins: Tensor | None = None
    class_weight: Tensor | None = None
    form: Form = "softmax"
    reduction: Reduction = "weighted-mean"

    @property
    def has_logit_grad(self) -> bool:
        """Whether :meth:`logit_grad` covers this loss: the softmax form without focal term or
        class weights, whose gradient is ``s (p - q)`` (CE, LORT, balanced softmax, LDAM)."""
        fixed = not isinstance(self.gamma, Tensor) and not isinstance(self.scale, Tensor)
        return self.form == "softmax" and fixed and self.gamma == 0.0 and self.class_weight is None

    @torch.no_grad()
    def logit_grad(self, logits: Tensor, labels: Tensor, rows: int | None = None) -> Tensor:
        """The gradient of ``sum(row losses) / rows`` (``rows`` the batch: the gradient of
        :meth:`__call__`) with respect to ``logits``, without autograd: ``s (softmax(u) - q) /
        rows``. Where a step is small its autograd graph costs more than its products
        (docs/performance.md). Only for losses with :attr:`has_logit_grad`; ``delta`` may be
        a number or (rows, 1), one value per row."""
        if not self.has_logit_grad:
            raise InputError("logit_grad covers the softmax losses without focal term or weights")
        labels = labels.long().unsqueeze(1)
        # Half-precision logits (autocast's products) in float32: p - q cancels digits.
        u = logits.float() if logits.dtype.itemsize < 4 else logits
        if self.shift is not None:
            u = u + self.shift.to(u)
        if self.margins is not None:
            u = u.scatter_add(1, labels, -self.margins.to(u)[labels])
        scale = float(self.scale)  # a number: has_logit_grad
        p = torch.softmax(u * scale if scale != 1.0 else u, dim=1)
        # p - q, with q = (1 - delta) onehot(y) + delta / K.
        delta = self.delta
        if isinstance(delta, Tensor) or delta != 0.0:
            p.sub_(delta / self.num_classes)
        if isinstance(delta, Tensor):
            keep = (delta - 1.0).to(p).expand(len(p), 1)
        else:
            keep = p.new_full((len(p), 1), delta - 1.0)
        p.scatter_add_(1, labels, keep)
        return p.mul_(scale / (len(p) if rows is None else rows))

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise InputError(
                f"logits must have shape (batch, {self.num_classes}), got {tuple(logits.shape)}"
            )
        labels = labels.long()
        z = logits
        if self.shift is not None:
            z = z + self.shift.to(z)
        if self.margins is not None:
            z = z - F.one_hot(labels, self.num_classes).to(z) * self.margins.to(z)[labels, None]
        if isinstance(self.scale, Tensor) or self.scale != 1.0:
            z = z * self.scale
        numbers = not isinstance(self.delta, Tensor) and not isinstance(self.gamma, Tensor)
        plain = numbers and self.gamma == 0.0 and self.class_weight is None
        if plain and self.form == "softmax":
            # The common case (CE, LORT, balanced softmax, LDAM) as torch's fused kernel.
            return F.cross_entropy(z, labels, label_smoothing=self.delta)
        q = retarget(labels, self.num_classes, self.delta, z.dtype)
        if self.form == "sigmoid":
            row_loss = F.binary_cross_entropy_with_logits(z, q, reduction="none").sum(dim=1)
        elif self.form == "softmax-bce":
            log_p = F.log_softmax(z, dim=1).clamp_min(BCE_LOG_FLOOR)
            # Where p rounds to 1 (log_p == 0), log(1 - p) is -inf, held at the floor, and its
            # gradient 0 * inf would be NaN: those entries take the floor with no gradient.
            below = log_p < 0
            log_1mp = torch.log(-torch.expm1(torch.where(below, log_p, -1.0)))
            log_not_p = torch.where(below, log_1mp, BCE_LOG_FLOOR).clamp_min(BCE_LOG_FLOOR)
            row_loss = -(q * log_p + (1 - q) * log_not_p).mean(dim=1)
        else:
            log_p = F.log_softmax(z, dim=1)
            if isinstance(self.gamma, Tensor) or self.gamma != 0.0:
                # 1 - p via expm1 keeps it accurate near p = 1; the clamp keeps (.)^gamma's
                # gradient finite when p rounds to 1 and gamma < 1.
                one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(z.dtype).tiny)
                q = q * one_minus_p.pow(self.gamma)
            row_loss = -(q * log_p).sum(dim=1)
        if self.class_weight is None:
            return row_loss.mean()
        w = self.class_weight.to(z)[labels]
        if self.reduction == "batch-mean":
            return (w * row_loss).mean()
        return (w * row_loss).sum() / w.sum()


def build_loss(
    kind: LossKind,
    train_counts: np.ndarray,
    *,
    delta: float = 0.0,
    focal_gamma: float = 1.0,
    ldam_max_margin: float = 0.5,
    ldam_scale: float = 30.0,
    class_weight: Tensor | None = None,
    reduction: Reduction = "weighted-mean",
) -> SoftmaxLoss:
    """The loss ``kind`` for classes with ``train_counts`` images (shared by stage 1 and 2)."""
    k = int(train_counts.size)
    weighted = {"class_weight": class_weight, "reduction": reduction}
    if kind == "ce":
        return SoftmaxLoss(k, delta=delta, **weighted)
    if kind == "bce":
        return SoftmaxLoss(k, delta=delta, form="sigmoid", **weighted)
    if kind == "softmax-bce":
        return SoftmaxLoss(k, delta=delta, form="softmax-bce", **weighted)
    if kind == "focal":
        if not focal_gamma >= 0.0:
            raise InputError(f"the focal gamma must be non-negative, got {focal_gamma}")
        return SoftmaxLoss(k, delta=delta, gamma=float(focal_gamma), **weighted)
    if kind == "ldam":
        if not ldam_scale > 0.0:
            raise InputError(f"the LDAM scale must be positive, got {ldam_scale}")
        margins = ldam_margins(train_counts, ldam_max_margin)
        return SoftmaxLoss(k, delta=delta, scale=float(ldam_scale), margins=margins, **weighted)
    if kind == "balanced-softmax":
        return SoftmaxLoss(k, delta=delta, shift=log_prior(train_counts), **weighted)
    raise InputError(
        f"unknown loss {kind!r}; expected ce, bce, softmax-bce, focal, ldam or balanced-softmax"
    )


def make_loss(
    method: Method,
    train_counts: npt.ArrayLike,
    *,
    smooth: float = 0.0,
    focal_gamma: float | None = None,
    ldam_max_margin: float | None = None,
    ldam_scale: float | None = None,
    cb_beta: float | None = None,
) -> LossFn:
    """The stage-2 training loss of ``method``: ``(logits, labels) -> scalar``.

    ``smooth`` is LORT's ``delta`` (in [0, 1)); a method with one-hot targets refuses a
    non-zero value rather than ignore it. The other keywords are read only by the methods
    that list them in ``Method.hyper``; one left at None takes the authors' value from the
    method's recipe (:mod:`lort.methods.recipes`, the one place those values are written).
    """
    authors = recipe_for(method.name).hyper
    focal_gamma = authors.get("focal_gamma", 0.0) if focal_gamma is None else focal_gamma
    ldam_max_margin = (
        authors.get("ldam_max_margin", 0.0) if ldam_max_margin is None else ldam_max_margin
    )
    ldam_scale = authors.get("ldam_scale", 1.0) if ldam_scale is None else ldam_scale
    cb_beta = authors.get("cb_beta", 0.0) if cb_beta is None else cb_beta
    counts = check_counts(train_counts)
    delta = check_delta(smooth, allow_one=False)
    if method.target == "onehot" and delta != 0.0:
        raise OptionError(
            f"{{smooth}} applies to LORT only; method {method.name!r} trains on one-hot targets "
            "(leave smooth at 0 or choose {method} lort)",
            "smooth",
            "method",
        )
    class_weight = None
    if method.reweight == "class-balanced":
        class_weight = class_balanced_weights(counts, cb_beta)
    # The class-balanced loss divides by the batch size as its authors' code does.
    return build_loss(
        method.loss,
        counts,
        delta=delta,
        focal_gamma=focal_gamma,
        ldam_max_margin=ldam_max_margin,
        ldam_scale=ldam_scale,
        class_weight=class_weight,
        reduction="batch-mean",
    )
