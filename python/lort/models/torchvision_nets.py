"""ImageNet-size backbones from torchvision: ResNet-50 and ResNeXt-50 (32x4d), 2048-d features.

Built with ``weights=None`` (nothing is downloaded) unless ``pretrained``: then with
torchvision's default ImageNet weights (``IMAGENET1K_V2``), downloaded once into torch's cache.
The backbone is the torchvision network with ``fc`` replaced by the identity, so it ends with
global average pooling and flatten, and its parameter names stay those of torchvision
(``conv1.weight``, ``layer1.0...``). torchvision is imported when a net is built, which keeps
``import lort.models`` fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from lort.errors import InputError

if TYPE_CHECKING:
    from torchvision.models import ResNet


def _strip_fc(net: ResNet, in_channels: int) -> tuple[nn.Module, int]:
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


def _weights(arch: str) -> Any:
    """torchvision's default ImageNet weights of ``arch`` (an enum member; nothing downloaded)."""
    from torchvision.models import ResNet50_Weights, ResNeXt50_32X4D_Weights

    return {"resnet50": ResNet50_Weights, "resnext50": ResNeXt50_32X4D_Weights}[arch].DEFAULT


def _build(arch: str, in_channels: int, pretrained: bool) -> tuple[nn.Module, int]:
    from torchvision.models import resnet50, resnext50_32x4d

    weights = _weights(arch) if pretrained else None
    make = {"resnet50": resnet50, "resnext50": resnext50_32x4d}[arch]
    try:
        net = make(weights=weights)
    except (RuntimeError, OSError) as e:  # no network, a damaged download
        raise InputError(f"torchvision could not load the {arch} weights {weights}: {e}") from None
    return _strip_fc(net, in_channels)


def resnet50_backbone(in_channels: int, pretrained: bool = False) -> tuple[nn.Module, int]:
    """torchvision ResNet-50 up to the flattened average pool; 2048-d features."""
    return _build("resnet50", in_channels, pretrained)


def resnext50_backbone(in_channels: int, pretrained: bool = False) -> tuple[nn.Module, int]:
    """torchvision ResNeXt-50 32x4d up to the flattened average pool; 2048-d features."""
    return _build("resnext50", in_channels, pretrained)


def torchvision_input(arch: str) -> dict[str, Any]:
    """Input size, resize, interpolation, mean and std of ``arch``'s default weights."""
    t = _weights(arch).transforms()
    return {
        "image_size": int(t.crop_size[0]),
        "resize": int(t.resize_size[0]),
        "interpolation": t.interpolation.value,
        "mean": tuple(float(v) for v in t.mean),
        "std": tuple(float(v) for v in t.std),
    }
