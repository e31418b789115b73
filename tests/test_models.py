"""Stage-1 networks: shapes, the backbone/head split, LDAM-DRW's ResNet-32 layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lort.errors import InputError
from lort.models import ARCHS, Classifier, build_model
from lort.models.cifar_resnet import PadShortcut

# (arch, input shape, feature dim); the torchvision nets get one small image only.
SHAPES = [
    ("small-cnn", (3, 1, 8, 8), 64),
    ("resnet8", (2, 3, 32, 32), 64),
    ("resnet20", (2, 3, 32, 32), 64),
    ("resnet32", (2, 3, 32, 32), 64),
    ("resnet34-cifar", (2, 3, 32, 32), 512),
    ("resnet50", (1, 3, 64, 64), 2048),
    ("resnext50", (1, 3, 64, 64), 2048),
]


def test_archs_are_the_contract() -> None:
    assert ARCHS == (
        "small-cnn",
        "resnet8",
        "resnet20",
        "resnet32",
        "resnet34-cifar",
        "resnet50",
        "resnext50",
    )
    assert sorted(a for a, _, _ in SHAPES) == sorted(ARCHS)


@pytest.mark.parametrize(("arch", "shape", "dim"), SHAPES)
def test_shapes_and_backbone_head_split(arch: str, shape: tuple[int, ...], dim: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, in_channels=shape[1]).eval()
    assert isinstance(model, Classifier)
    assert model.feature_dim == dim
    assert isinstance(model.head, nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (dim, 7)
    x = torch.randn(shape)
    with torch.no_grad():
        features = model.backbone(x)
        logits = model(x)
    assert features.shape == (shape[0], dim)
    assert logits.shape == (shape[0], 7)
    torch.testing.assert_close(logits, model.head(features), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("arch", "params", "convs"), [("resnet8", 75_290, 7), ("resnet20", 269_722, 19)]
)
def test_smaller_cifar_resnets(arch: str, params: int, convs: int) -> None:
    """ResNet-(6n+2): each extra block per stage adds 97,216 parameters (ResNet-20: 0.27M)."""
    model = build_model(arch, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs


def test_resnet32_is_ldam_drw_layout() -> None:
    model = build_model("resnet32", num_classes=10)
    # LDAM-DRW's resnet32 for CIFAR-10 has 464,154 parameters (about 0.46M).
    assert sum(p.numel() for p in model.parameters()) == 464_154
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 31  # stem + 15 blocks x 2; option A shortcuts have no convolution
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, PadShortcut) for m in model.modules()) == 2


def test_option_a_shortcut_subsamples_and_zero_pads() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(16, 32)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_resnet34_cifar_stem() -> None:
    model = build_model("resnet34-cifar", num_classes=100)
    stem = model.backbone.conv1
    assert (stem.kernel_size, stem.stride) == ((3, 3), (1, 1))
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    blocks = [len(stage) for stage in model.backbone.stages]
    assert blocks == [3, 4, 6, 3]


def test_small_cnn_is_small_and_takes_gray_images() -> None:
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    assert sum(p.numel() for p in model.parameters()) < 30_000
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_unknown_arch_lists_the_valid_ones() -> None:
    with pytest.raises(InputError) as err:
        build_model("vgg16", num_classes=10)
    for arch in ARCHS:
        assert arch in str(err.value)


@pytest.mark.parametrize(("num_classes", "in_channels"), [(0, 3), (10, 0)])
def test_bad_sizes_are_input_errors(num_classes: int, in_channels: int) -> None:
    with pytest.raises(InputError):
        build_model("small-cnn", num_classes=num_classes, in_channels=in_channels)
