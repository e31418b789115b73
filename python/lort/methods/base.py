"""The :class:`Method` record and the registry of the twelve re-training methods (Table 1).

Section 3.1 of the paper writes every classifier re-training method as one formula: a
target distribution, a head that turns frozen features into logits, a loss on those
logits (optionally re-weighted per class), a sampler, a constraint applied after every
optimiser step, and a post-hoc change of the logits at inference. A :class:`Method` names
one choice for each part; every field left out of a registry entry is that of vanilla
cross-entropy, so an entry spells out only what the method changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lort.errors import InputError

Target = Literal["onehot", "smooth"]
HeadKind = Literal["linear", "cosine", "normed", "lws"]
LossKind = Literal["ce", "focal", "ldam", "balanced-softmax"]
Reweight = Literal["class-balanced"]
Sampler = Literal["instance", "class-balanced"]
Constraint = Literal["maxnorm"]
Inference = Literal["tau-norm", "logit-adjust"]


@dataclass(frozen=True)
class Method:
    """One classifier re-training method as a choice of parts.

    ``target``: "onehot", or "smooth" = LORT's ``(1 - delta) * onehot + delta / K``.
    ``head``: "linear" (``W f + b``); "cosine" (``s cos(W_j, f)`` with a learnable scale ``s``);
    "normed" (LDAM-DRW's normalised linear layer: ``cos(W_j, f)``, the loss supplies the scale);
    "lws" (the stage-1 ``W f + b`` times a learnable per-class scale).
    ``loss``: "ce", "focal", "ldam" (label-dependent margins) or "balanced-softmax".
    ``reweight``: None or "class-balanced" (effective-number class weights).
    ``sampler``: "instance" or "class-balanced" (every class equally likely per draw).
    ``constraint``: None or "maxnorm" (project each class weight onto an L2 ball after a step).
    ``inference``: None, "tau-norm" (``W_j / ||W_j||^tau``) or "logit-adjust" (``z - tau log p``).
    ``hyper``: the keyword arguments of ``make_loss``, ``apply_constraint`` and
    ``inference_logits`` that this method reads; the others do not change it.
    """

    name: str
    title: str
    target: Target = "onehot"
    head: HeadKind = "linear"
    loss: LossKind = "ce"
    reweight: Reweight | None = None
    sampler: Sampler = "instance"
    constraint: Constraint | None = None
    inference: Inference | None = None
    hyper: tuple[str, ...] = ()


# fmt: off
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lort", "LORT (logits retargeting)", target="smooth", hyper=("smooth",)),
    Method("ce", "Vanilla FC (cross-entropy)"),
    Method("cosine", "Cosine classifier", head="cosine"),
    Method("lws", "Learnable weight scaling (LWS)", head="lws"),
    Method("ldam", "LDAM", head="normed", loss="ldam", hyper=("ldam_max_margin", "ldam_scale")),
    Method("balanced-softmax", "Balanced softmax", loss="balanced-softmax"),
    Method("cb-resample", "Class-balanced re-sampling", sampler="class-balanced"),
    Method("focal", "Focal loss", loss="focal", hyper=("focal_gamma",)),
    Method("cb-loss", "Class-balanced loss", reweight="class-balanced", hyper=("cb_beta",)),
    Method("maxnorm", "MaxNorm", constraint="maxnorm", hyper=("threshold",)),
    Method("tau-norm", "tau-normalisation", inference="tau-norm", hyper=("tau",)),
    Method("logit-adjust", "Post-hoc logit adjustment", inference="logit-adjust", hyper=("tau",)),
)}
# fmt: on


def get_method(name: str) -> Method:
    """The registered method called ``name``; InputError listing the valid names otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown re-training method {name!r}; choose --method from {', '.join(METHODS)}"
        ) from None
