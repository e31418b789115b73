"""Stage-1 networks: ``build_model(arch, num_classes)`` returns a :class:`Classifier`.

A classifier is a backbone (images -> B x feature_dim features, pooling and flatten
included) followed by a head: linear, or LDAM-DRW's normalised layer (:class:`NormedLinear`)
for ``--stage1-loss ldam-drw``; stage 2 freezes the backbone and re-trains a head on its
features (see :mod:`lort.methods`).

``arch`` is one of :data:`ARCHS` (lort's own networks and torchvision's ResNet-50 /
ResNeXt-50) or ``timm:NAME``, any model of timm. Pretrained networks (the torchvision ones with
``pretrained``, every timm model) read images as their pretrained config says
(:func:`input_spec`), not as the dataset's defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lort.data.transforms import TransformSpec
from lort.errors import InputError
from lort.models.cifar_resnet import (
    resnet8_backbone,
    resnet20_backbone,
    resnet32_backbone,
    resnet34_cifar_backbone,
)
from lort.models.small_cnn import small_cnn_backbone
from lort.models.timm_nets import PREFIX as TIMM_PREFIX
from lort.models.timm_nets import check_name, timm_backbone, timm_input
from lort.models.torchvision_nets import resnet50_backbone, resnext50_backbone, torchvision_input
from lort.models.weights import load_backbone_weights, read_state_dict

_BACKBONES: dict[str, Callable[[int], tuple[nn.Module, int]]] = {
    "small-cnn": small_cnn_backbone,
    "resnet8": resnet8_backbone,
    "resnet20": resnet20_backbone,
    "resnet32": resnet32_backbone,
    "resnet34-cifar": resnet34_cifar_backbone,
    "resnet50": resnet50_backbone,
    "resnext50": resnext50_backbone,
}
ARCHS: tuple[str, ...] = tuple(_BACKBONES)
# The archs with downloadable pretrained weights, besides every timm:NAME.
PRETRAINED = ("resnet50", "resnext50")


def check_arch(arch: str, *, pretrained: bool = False) -> None:
    """``arch`` is buildable (timm installed and knowing NAME) and, with ``pretrained``, has
    weights to download; InputError otherwise."""
    if arch.startswith(TIMM_PREFIX):
        check_name(arch.removeprefix(TIMM_PREFIX))
        return
    if arch not in _BACKBONES:
        raise InputError(
            f"unknown architecture {arch!r}; choose --arch from {', '.join(ARCHS)} or timm:NAME"
        )
    if pretrained and arch not in PRETRAINED:
        raise InputError(
            f"--pretrained: lort's {arch} has no pretrained weights; use "
            f"{' or '.join(PRETRAINED)}, timm:NAME, or --weights FILE"
        )


HeadKind = Literal["linear", "normed"]


class NormedLinear(nn.Module):
    """LDAM-DRW's normalised last layer (kaidic/LDAM-DRW ``models/resnet_cifar.py:37-46``):
    logit ``j`` is ``cos(W_j, x)``, no bias; LDAM's loss subtracts the margin and scales by s.
    ``weight`` is K x D as in ``nn.Linear`` (theirs is stored D x K); each class vector starts
    as theirs does, uniform(-1, 1) entries renormed to unit length."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        weight = torch.empty(out_features, in_features).uniform_(-1, 1)
        self.weight = nn.Parameter(weight.renorm_(2, 0, 1e-5).mul_(1e5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


def classifier_head(kind: HeadKind, feature_dim: int, num_classes: int) -> nn.Linear | NormedLinear:
    """A freshly initialised stage-1 head of ``kind``."""
    if kind == "linear":
        return nn.Linear(feature_dim, num_classes)
    return NormedLinear(feature_dim, num_classes)


class Classifier(nn.Module):
    """``head(backbone(x))``: a feature extractor and a classifier on its features, linear
    (``W f + b``) or normalised (:class:`NormedLinear`)."""

    def __init__(
        self, backbone: nn.Module, feature_dim: int, num_classes: int, head: HeadKind = "linear"
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = classifier_head(head, feature_dim, num_classes)
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    *,
    pretrained: bool = False,
    head: HeadKind = "linear",
) -> Classifier:
    """A network of ``arch`` (see :func:`check_arch`) with a freshly initialised ``head``; the
    backbone is fresh too unless ``pretrained`` (downloaded by torchvision or timm)."""
    check_arch(arch, pretrained=pretrained)
    if num_classes < 1:
        raise InputError(f"num_classes must be at least 1, got {num_classes}")
    if in_channels < 1:
        raise InputError(f"in_channels must be at least 1, got {in_channels}")
    if arch.startswith(TIMM_PREFIX):
        backbone, feature_dim = timm_backbone(
            arch.removeprefix(TIMM_PREFIX), in_channels, pretrained
        )
    elif arch in PRETRAINED:
        backbone, feature_dim = _BACKBONES[arch](in_channels, pretrained)  # type: ignore[call-arg]
    else:
        backbone, feature_dim = _BACKBONES[arch](in_channels)
    model = Classifier(backbone, feature_dim, num_classes, head)
    if arch in ("resnet8", "resnet20", "resnet32") and head == "linear":
        # LDAM-DRW initialises its linear classifier like its convolutions (NormedLinear keeps
        # its own initialisation there too)
        nn.init.kaiming_normal_(model.head.weight)
    return model


def input_spec(
    arch: str, *, pretrained: bool, weights: str | None, in_channels: int, mirror: bool
) -> TransformSpec | None:
    """How a pretrained ``arch`` reads images (the ``resized`` pipeline with its input size,
    resize, interpolation and normalisation), or None where the dataset's own pipeline
    applies: timm models always use their pretrained config; torchvision's ResNet-50 /
    ResNeXt-50 that of their default weights when started from weights (``pretrained`` or a
    ``weights`` file); lort's own networks the dataset's. One-channel data averages the
    normalisation over the colour channels."""
    if arch.startswith(TIMM_PREFIX):
        cfg = timm_input(arch.removeprefix(TIMM_PREFIX))
    elif arch in PRETRAINED and (pretrained or weights):
        cfg = torchvision_input(arch)
    else:
        return None
    mean, std = cfg["mean"], cfg["std"]
    if in_channels != len(mean):
        mean, std = (sum(mean) / len(mean),) * in_channels, (sum(std) / len(std),) * in_channels
    return TransformSpec(
        "resized",
        cfg["image_size"],
        mean,
        std,
        resize=cfg["resize"],
        interpolation=cfg["interpolation"],
        mirror=mirror,
    )


__all__ = [
    "ARCHS",
    "PRETRAINED",
    "TIMM_PREFIX",
    "Classifier",
    "HeadKind",
    "NormedLinear",
    "build_model",
    "check_arch",
    "classifier_head",
    "input_spec",
    "load_backbone_weights",
    "read_state_dict",
]
