"""Normalisation statistics and the train (augment) / eval image transforms.

The pipelines, picked by :attr:`TransformSpec.kind`:

- ``digits``: 1x8x8 float tensors in [0, 1]; augment shifts by up to one pixel (zero
  padding), no flip.
- ``small`` (32px CIFAR and small imagefolder images, PIL input): augment is
  RandomCrop(size, padding=4) + horizontal flip; eval only converts. Small imagefolder images
  are normalised with the CIFAR statistics, as the CIFAR-10 JPEG set they are made for.
- ``large`` (224px ImageNet-LT, iNaturalist 2018 and large imagefolder images, PIL input):
  augment is RandomResizedCrop(224) + horizontal flip (+ ColorJitter(0.4, 0.4, 0.4, 0) for
  ImageNet-LT); eval is Resize(256) + CenterCrop(224).
- ``resized`` (a pretrained network's own input, from its pretrained config: timm's data config,
  or the torchvision weights' transforms): eval is Resize(``resize``) + CenterCrop(size) with the
  model's interpolation; augment is RandomResizedCrop(size) + horizontal flip (where the data
  mirrors). Takes PIL images or float tensors in [0, 1] (the digits).
- ``features``: no images at all (``--dataset features``); there is no transform.

torchvision is imported when a transform is built, so ``lort.data`` imports without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from lort.errors import InputError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INAT_MEAN = (0.466, 0.471, 0.380)
INAT_STD = (0.195, 0.194, 0.192)
# Pixel mean and standard deviation of all 1,797 sklearn digits scaled to [0, 1].
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3760,)

LARGE_SIZE = 224
LARGE_RESIZE = 256
SMALL_PADDING = 4
DIGITS_PADDING = 1


@dataclass(frozen=True)
class TransformSpec:
    """What a dataset's images need: pipeline kind, output side and normalisation.
    ``resize`` and ``interpolation`` are the ``resized`` pipeline's; ``mirror`` is False for
    data whose mirror image is another class (digits) or, for ``features``, that hold no
    mirrored view."""

    kind: Literal["digits", "small", "large", "resized", "features"]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color_jitter: bool = False
    resize: int | None = None
    interpolation: str = "bilinear"
    mirror: bool = True

    @property
    def mirrorable(self) -> bool:
        """Whether a mirrored image is still an image of its class: the pipelines that flip
        in training (a mirrored digit 2 is no 2)."""
        return self.kind != "digits" and self.mirror


class ToFloatImage:
    """A PIL image to a float tensor in [0, 1]; a tensor (already float) passes through.
    A class, not a lambda, so that DataLoader workers can pickle it."""

    def __call__(self, image: Any) -> Any:
        import torch
        from torchvision.transforms import functional as TF

        return image if isinstance(image, torch.Tensor) else TF.to_tensor(image)


def build_transform(spec: TransformSpec, augment: bool) -> Callable[[Any], Any]:
    """The torchvision transform mapping one decoded image to a normalised float tensor."""
    from torchvision import transforms as T

    if spec.kind == "features":
        raise InputError("a features dataset holds no images: there is no image transform")
    normalize = T.Normalize(spec.mean, spec.std)
    if spec.kind == "resized":
        mode = T.InterpolationMode(spec.interpolation)
        if augment:
            steps = [T.RandomResizedCrop(spec.image_size, interpolation=mode)]
            steps += [T.RandomHorizontalFlip()] if spec.mirrorable else []
        else:
            resize = spec.resize or spec.image_size
            steps = [T.Resize(resize, interpolation=mode), T.CenterCrop(spec.image_size)]
        return T.Compose([*steps, ToFloatImage(), normalize])
    if spec.kind == "digits":
        steps = [T.RandomCrop(spec.image_size, padding=DIGITS_PADDING)] if augment else []
        return T.Compose([*steps, normalize])
    if spec.kind == "small":
        steps = (
            [T.RandomCrop(spec.image_size, padding=SMALL_PADDING), T.RandomHorizontalFlip()]
            if augment
            else []
        )
        return T.Compose([*steps, T.ToTensor(), normalize])
    if augment:
        steps = [T.RandomResizedCrop(spec.image_size), T.RandomHorizontalFlip()]
        if spec.color_jitter:
            steps.append(T.ColorJitter(0.4, 0.4, 0.4, 0))
    else:
        steps = [T.Resize(LARGE_RESIZE), T.CenterCrop(spec.image_size)]
    return T.Compose([*steps, T.ToTensor(), normalize])
