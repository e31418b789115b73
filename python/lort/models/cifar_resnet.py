"""CIFAR ResNets: LDAM-DRW's ResNet-32 and a ResNet-34 with a CIFAR stem.

Both take 32x32 images (any size works: the features are globally average-pooled).

- ``resnet32``: 3 stages of 5 BasicBlocks with 16/32/64 channels, parameter-free
  "option A" shortcuts (stride-2 subsampling plus zero channel padding) and Kaiming
  normal initialisation, as in LDAM-DRW (Cao et al., 2019). 64-d features.
- ``resnet34-cifar``: the ResNet-34 layout (3, 4, 6, 3 BasicBlocks, 64..512 channels,
  1x1 convolution shortcuts) behind a 3x3 stride-1 stem without max-pool. 512-d features.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Shortcut = Literal["A", "B"]


class PadShortcut(nn.Module):
    """Option A shortcut: keep every other pixel, zero-pad the new channels on both sides."""

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        self.pad = (planes - in_planes) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a residual connection."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: Shortcut) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = PadShortcut(in_planes, planes)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A 3x3 stride-1 stem, stages of BasicBlocks, global average pooling: images -> features."""

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        shortcut: Shortcut,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        in_planes = widths[0]
        for i, (planes, depth) in enumerate(zip(widths, depths, strict=True)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.feature_dim = in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(F.relu(self.bn1(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def kaiming_init(module: nn.Module) -> None:
    """LDAM-DRW's ``_weights_init``: Kaiming normal weights for conv and linear layers."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.kaiming_normal_(module.weight)


def cifar_resnet_backbone(in_channels: int, blocks: int) -> tuple[nn.Module, int]:
    """He et al.'s CIFAR ResNet-(6n+2) with n = ``blocks`` per stage, as LDAM-DRW builds it
    (option-A shortcuts, Kaiming init), without its classifier; 64-d features."""
    net = CifarResNet(in_channels, (16, 32, 64), (blocks,) * 3, shortcut="A")
    net.apply(kaiming_init)
    return net, net.feature_dim


def resnet32_backbone(in_channels: int) -> tuple[nn.Module, int]:
    """LDAM-DRW's ResNet-32 (the CIFAR-10/100-LT standard)."""
    return cifar_resnet_backbone(in_channels, 5)


def resnet20_backbone(in_channels: int) -> tuple[nn.Module, int]:
    """ResNet-20: the same family, 3 blocks per stage."""
    return cifar_resnet_backbone(in_channels, 3)


def resnet8_backbone(in_channels: int) -> tuple[nn.Module, int]:
    """ResNet-8: one block per stage, for CPU-sized recipes."""
    return cifar_resnet_backbone(in_channels, 1)


def resnet34_cifar_backbone(in_channels: int) -> tuple[nn.Module, int]:
    """ResNet-34 with a CIFAR stem (3x3 stride 1, no max-pool); 512-d features."""
    net = CifarResNet(in_channels, (64, 128, 256, 512), (3, 4, 6, 3), shortcut="B")
    return net, net.feature_dim
