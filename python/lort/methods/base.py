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

from lort.errors import InputError, OptionError

Target = Literal["onehot", "smooth"]
HeadKind = Literal["linear", "cosine", "normed", "lws"]
LossKind = Literal["ce", "bce", "softmax-bce", "focal", "ldam", "balanced-softmax"]
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
    ``loss``: "ce", "bce" (a sigmoid per class), "softmax-bce" (binary cross-entropy on softmax
    probabilities), "focal", "ldam" (label-dependent margins) or "balanced-softmax".
    ``reweight``: None or "class-balanced" (effective-number class weights).
    ``sampler``: "instance" or "class-balanced" (every class equally likely per draw).
    ``constraint``: None or "maxnorm" (project each class weight onto an L2 ball after every
    epoch, the radius relative to the stage-1 class norms).
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


# The parts each method's authors train with (docs/stage2-recipes.md has the sources): LWS
# samples class-balanced (Decoupling, cls_lws.yaml); MaxNorm trains with LTWB's class-balanced
# BCE-on-softmax loss (demo2_second-stage-training.py); the class-balanced loss of Table 1 is
# the BCE (sigmoid) form, its authors' softmax form is cb-loss-softmax.
# fmt: off
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lort", "LORT (logits retargeting)", target="smooth", hyper=("smooth",)),
    Method("ce", "Vanilla FC (cross-entropy)"),
    Method("cosine", "Cosine classifier", head="cosine"),
    Method("lws", "Learnable weight scaling (LWS)", head="lws", sampler="class-balanced"),
    Method("ldam", "LDAM", head="normed", loss="ldam", hyper=("ldam_max_margin", "ldam_scale")),
    Method("balanced-softmax", "Balanced softmax", loss="balanced-softmax"),
    Method("cb-resample", "Class-balanced re-sampling (cRT)", sampler="class-balanced"),
    Method("focal", "Focal loss", loss="focal", hyper=("focal_gamma",)),
    Method("cb-loss", "Class-balanced loss (BCE)", loss="bce", reweight="class-balanced",
           hyper=("cb_beta",)),
    Method("maxnorm", "MaxNorm (with weight decay)", loss="softmax-bce",
           reweight="class-balanced", constraint="maxnorm", hyper=("cb_beta", "threshold")),
    Method("tau-norm", "tau-normalisation", inference="tau-norm", hyper=("tau",)),
    Method("logit-adjust", "Post-hoc logit adjustment", inference="logit-adjust", hyper=("tau",)),
    Method("cb-loss-softmax", "Class-balanced loss (softmax)", reweight="class-balanced",
           hyper=("cb_beta",)),
)}
# fmt: on
# Table 1 of the paper: the twelve methods `--methods all` compares (cb-loss-softmax is the
# class-balanced loss's other form, compared when named).
TABLE1: tuple[str, ...] = tuple(METHODS)[:12]


PARTS = ("target", "head", "loss", "reweight", "sampler", "constraint", "inference")
_VANILLA = Method("vanilla", "")


def get_method(name: str) -> Method:
    """The registered method called ``name``, or a composition ``a+b[+c...]`` of registered
    methods (:func:`compose`); InputError listing the valid names otherwise."""
    if isinstance(name, str) and "+" in name:
        return compose(name.split("+"))
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise OptionError(
            f"unknown re-training method {name!r}; choose {{method}} from {', '.join(METHODS)}, "
            "or join several with + (e.g. lort+logit-adjust)",
            "method",
        ) from None


def compose(names: list[str]) -> Method:
    """One method taking each part of the paper's formula from the method that changes it
    (``lort+logit-adjust``: LORT's target, logit adjustment's inference rule). A part changed
    by two of them, or parts that contradict each other, is an InputError."""
    if len(names) < 2 or len(set(names)) != len(names) or not all(names):
        raise InputError(
            f"a composition joins two or more different methods with +, got {'+'.join(names)!r}"
        )
    methods = [get_method(n) for n in names]  # each a registered method
    parts: dict[str, tuple[str, object]] = {}
    for m in methods:
        for part in PARTS:
            value = getattr(m, part)
            if value == getattr(_VANILLA, part):
                continue
            if part in parts:
                other, first = parts[part]
                raise InputError(
                    f"{other} and {m.name} both set the {part} ({first} and {value}); a "
                    "composition takes each part from one method"
                )
            parts[part] = (m.name, value)
    combined = Method(
        "+".join(names),
        " + ".join(m.title for m in methods),
        **{part: value for part, (_, value) in parts.items()},  # type: ignore[arg-type]
        hyper=tuple(dict.fromkeys(h for m in methods for h in m.hyper)),
    )
    if combined.inference == "tau-norm" and combined.head not in ("linear", "lws"):
        raise InputError(
            f"tau-norm rescales class weight vectors; the {combined.head} head's are unit "
            "vectors already: compose it with a linear or LWS head"
        )
    if combined.loss == "balanced-softmax" and combined.inference == "logit-adjust":
        raise InputError(
            "balanced softmax already builds the class prior into training; logit adjustment "
            "would subtract it a second time"
        )
    return combined
