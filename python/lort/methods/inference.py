"""Inference logits, with the post-hoc corrections of tau-norm and logit adjustment.

- tau-normalisation (Kang et al., 2020): ``z_j = <W_j / ||W_j||^tau, f>``, the bias dropped as
  in Decoupling's ``tau_norm.py`` (``dotproduct_similarity`` of features and normalised
  weights); ``tau = 0`` is the head's weights without bias, ``tau = 1`` unit-norm weights.
- post-hoc logit adjustment (Menon et al., 2021): ``z - tau * log prior``,
  ``prior_j = n_j / sum n``.

:func:`fold_inference` writes any head with its rule as one :class:`FoldedHead` (a linear map,
on L2-normalised features for the cosine heads): the form ``lort export`` ships.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lort.errors import InputError
from lort.methods.base import Method
from lort.methods.heads import CosineHead, LinearHead, LWSHead
from lort.methods.losses import log_prior
from lort.methods.recipes import AUTHORS_TAU


def tau_normalised_weight(weight: Tensor, tau: float | Tensor) -> Tensor:
    """Rows ``W_j / ||W_j||^tau`` (a zero row stays zero)."""
    norms = weight.norm(dim=1, keepdim=True)
    return weight / norms.clamp_min(torch.finfo(weight.dtype).tiny).pow(tau)


@torch.no_grad()
def inference_logits(
    method: Method,
    head: nn.Module,
    features: Tensor,
    train_counts: npt.ArrayLike,
    *,
    tau: float | Tensor = AUTHORS_TAU,
) -> Tensor:
    """Test-time logits of ``head`` on ``features`` (B x D), corrected as ``method`` says.

    ``train_counts`` (per-class training image counts) is read by logit adjustment only;
    ``tau`` may be a 0-d tensor (one head's value under ``torch.func.vmap``).
    """
    if method.inference == "tau-norm":
        return F.linear(features, tau_normalised_weight(_class_weights(head), tau))
    logits = head(features)
    if method.inference == "logit-adjust":
        prior = log_prior(train_counts)
        if prior.numel() != logits.shape[1]:
            raise InputError(
                f"train_counts has {prior.numel()} classes but the head has {logits.shape[1]}"
            )
        return logits - tau * prior.to(logits)
    return logits


def _class_weights(head: nn.Module) -> Tensor:
    """The weight rows a linear or LWS head applies (LWS: its scales times the stage-1
    classifier's): what tau-norm normalises."""
    if isinstance(head, LWSHead):
        return head.scales[:, None] * head.weight
    if isinstance(head, LinearHead):
        return head.weight
    raise InputError(f"tau-norm needs a linear or LWS head, got {type(head).__name__}")


class FoldedHead(nn.Module):
    """``weight @ g(f) + bias`` with ``g`` the identity, or L2 normalisation (``normalise``):
    a re-trained head and its inference rule as one plain module (buffers, no parameters)."""

    def __init__(self, weight: Tensor, bias: Tensor | None, normalise: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.normalise = normalise

    def forward(self, features: Tensor) -> Tensor:
        if self.normalise:
            features = F.normalize(features, dim=1)
        return F.linear(features, self.weight, self.bias)


@torch.no_grad()
def fold_inference(
    method: Method, head: nn.Module, train_counts: npt.ArrayLike, *, tau: float = AUTHORS_TAU
) -> FoldedHead:
    """``head`` with ``method``'s inference rule folded in; its logits are those of
    :func:`inference_logits` up to float rounding: tau-norm's normalised weights, logit
    adjustment's ``- tau log prior`` as a bias, LWS's scales in the weights and bias, the cosine
    heads' scale in their unit-norm weights."""
    if method.inference == "tau-norm":
        folded = FoldedHead(tau_normalised_weight(_class_weights(head), tau), None, False)
    elif isinstance(head, CosineHead):  # cosine and LDAM's normed layer: no bias
        folded = FoldedHead(head.scale * F.normalize(head.weight, dim=1), None, True)
    elif isinstance(head, LWSHead):
        folded = FoldedHead(head.scales[:, None] * head.weight, head.scales * head.bias, False)
    else:
        folded = FoldedHead(head.weight, head.bias, False)
    if method.inference == "logit-adjust":
        prior = log_prior(train_counts)
        if prior.numel() != folded.weight.shape[0]:
            raise InputError(
                f"train_counts has {prior.numel()} classes but the head has "
                f"{folded.weight.shape[0]}"
            )
        shift = -tau * prior.to(folded.weight)
        folded.bias = shift if folded.bias is None else folded.bias + shift
    return folded


WEIGHT_NORM_DEFINITION = (
    "mean over the group's classes of ||w_c||, the norm of the class weight vector the head "
    "applies at inference (biases left out): linear heads (lort, ce, balanced-softmax, "
    "cb-resample, focal, cb-loss, cb-loss-softmax, maxnorm, logit-adjust) their row W_c (logit "
    "adjustment shifts logits, not weights); tau-norm W_c / ||W_c||^tau (no bias); lws "
    "scale_c * W_c of the stage-1 classifier; cosine |s| (the learnt scale on unit-norm "
    "weights, features normalised too); ldam 1 (its normalised layer; the loss's s = 30 is a "
    "training-time scale, not used at inference)"
)


@torch.no_grad()
def inference_weight_norms(method: Method, head: nn.Module, tau: float) -> np.ndarray:
    """Per-class norm of the weight vector ``head`` applies at inference (float64; see
    :data:`WEIGHT_NORM_DEFINITION`)."""
    k = int(head.weight.shape[0])
    if method.inference == "tau-norm":
        w = tau_normalised_weight(_class_weights(head), tau)
    elif isinstance(head, CosineHead):
        return np.full(k, abs(float(head.scale)), dtype=np.float64)
    elif isinstance(head, LWSHead):
        w = head.scales[:, None] * head.weight
    else:
        w = head.weight
    return w.detach().double().norm(dim=1).numpy()
