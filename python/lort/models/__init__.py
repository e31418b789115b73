"""Stage-1 networks: ``build_model(arch, num_classes)`` returns a :class:`Classifier`.

A classifier is a backbone (images -> B x feature_dim features, pooling and flatten
included) followed by a linear head; stage 2 freezes the backbone and re-trains a head
on its features (see :mod:`lort.methods`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lort.errors import InputError
from lort.models.cifar_resnet import (
    resnet8_backbone,
    resnet20_backbone,
    resnet32_backbone,
    resnet34_cifar_backbone,
)
from lort.models.small_cnn import small_cnn_backbone
from lort.models.torchvision_nets import resnet50_backbone, resnext50_backbone

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


class Classifier(nn.Module):
    """``head(backbone(x))``: a feature extractor and a linear classifier on its features."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(arch: str, num_classes: int, in_channels: int = 3) -> Classifier:
    """A freshly initialised network of ``arch`` (one of :data:`ARCHS`); no weights are loaded."""
    if arch not in _BACKBONES:
        raise InputError(f"unknown architecture {arch!r}; choose --arch from {', '.join(ARCHS)}")
    if num_classes < 1:
        raise InputError(f"num_classes must be at least 1, got {num_classes}")
    if in_channels < 1:
        raise InputError(f"in_channels must be at least 1, got {in_channels}")
    backbone, feature_dim = _BACKBONES[arch](in_channels)
    model = Classifier(backbone, feature_dim, num_classes)
    if arch in ("resnet8", "resnet20", "resnet32"):
        # LDAM-DRW initialises its classifier like its convolutions
        nn.init.kaiming_normal_(model.head.weight)
    return model


__all__ = ["ARCHS", "Classifier", "build_model"]
