"""ImageNet-size backbones from torchvision: ResNet-50 and ResNeXt-50 (32x4d), 2048-d features.

Built with ``weights=None`` (nothing is downloaded). The backbone is the torchvision network
with ``fc`` replaced by the identity, so it ends with global average pooling and flatten, and
its parameter names stay those of torchvision (``conv1.weight``, ``layer1.0...``).
torchvision is imported when a net is built, which keeps ``import lort.models`` fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from torchvision.models import ResNet


def _strip_fc(net: ResNet, in_channels: int) -> tuple[nn.Module, int]:
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def resnet50_backbone(in_channels: int) -> tuple[nn.Module, int]:
    """torchvision ResNet-50 up to the flattened average pool; 2048-d features."""
    from torchvision.models import resnet50

    return _strip_fc(resnet50(weights=None), in_channels)


def resnext50_backbone(in_channels: int) -> tuple[nn.Module, int]:
    """torchvision ResNeXt-50 32x4d up to the flattened average pool; 2048-d features."""
    from torchvision.models import resnext50_32x4d

    return _strip_fc(resnext50_32x4d(weights=None), in_channels)
