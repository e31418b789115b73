"""The train / eval pipelines and their normalisation statistics."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision import transforms as T

from lort.data.transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TransformSpec,
    build_transform,
)

CIFAR = TransformSpec("small", 32, CIFAR_MEAN, CIFAR_STD)
IMAGENET = TransformSpec("large", 224, IMAGENET_MEAN, IMAGENET_STD, color_jitter=True)


def steps(spec: TransformSpec, augment: bool) -> list[type]:
    return [type(t) for t in build_transform(spec, augment).transforms]


def test_statistics() -> None:
    assert CIFAR_MEAN == (0.4914, 0.4822, 0.4465) and CIFAR_STD == (0.2023, 0.1994, 0.2010)
    colour = (10, 128, 250)
    out = build_transform(CIFAR, augment=False)(Image.new("RGB", (32, 32), colour))
    expected = (torch.tensor(colour) / 255.0 - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)
    torch.testing.assert_close(out[:, 5, 5], expected)


def test_small_pipeline() -> None:
    assert steps(CIFAR, False) == [T.ToTensor, T.Normalize]
    assert steps(CIFAR, True) == [T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    crop = build_transform(CIFAR, True).transforms[0]
    assert crop.size == (32, 32) and crop.padding == 4


def test_large_pipelines() -> None:
    evaluation = build_transform(IMAGENET, False).transforms
    assert [type(t) for t in evaluation] == [T.Resize, T.CenterCrop, T.ToTensor, T.Normalize]
    assert evaluation[0].size == 256 and evaluation[1].size == (224, 224)
    train = build_transform(IMAGENET, True).transforms
    assert [type(t) for t in train[:3]] == [
        T.RandomResizedCrop,
        T.RandomHorizontalFlip,
        T.ColorJitter,
    ]
    assert train[0].size == (224, 224)
    assert train[2].brightness == (0.6, 1.4) and train[2].hue is None
    plain = TransformSpec("large", 224, IMAGENET_MEAN, IMAGENET_STD)
    assert T.ColorJitter not in steps(plain, True)
    out = build_transform(IMAGENET, True)(Image.new("RGB", (300, 200)))
    assert out.shape == (3, 224, 224)


def test_digits_pipeline_takes_tensors_and_never_flips() -> None:
    spec = TransformSpec("digits", 8, (0.5,), (0.25,))
    assert steps(spec, True) == [T.RandomCrop, T.Normalize]
    assert steps(spec, False) == [T.Normalize]
    out = build_transform(spec, False)(torch.ones(1, 8, 8))
    torch.testing.assert_close(out, torch.full((1, 8, 8), 2.0))
