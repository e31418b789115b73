"""A tiny convolutional backbone for the 8x8 digits (digits-lt); trains in seconds on a CPU."""

from __future__ import annotations

from torch import nn


def small_cnn_backbone(in_channels: int) -> tuple[nn.Module, int]:
    """Two 3x3 conv-BN-ReLU layers (32 and 64 channels), global average pooling; 64-d features."""
    net = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return net, 64
