"""``LTData``: the labels, image sources and manifest of one built long-tailed dataset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from lort.data.sources import ImageFiles, Images
from lort.data.transforms import TransformSpec
from lort.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from lort.data.tensor_images import TensorImages

Split = Literal["train", "val", "test"]


@dataclass(eq=False)
class LTData:
    """A long-tailed training set with its validation and (balanced) test sets.

    ``sources`` maps each split that exists to its images, aligned with its labels;
    ``transform_spec`` says how :meth:`dataset` decodes and normalises them.
    """

    name: str
    num_classes: int
    class_names: list[str]
    image_size: int
    in_channels: int
    train_labels: np.ndarray
    val_labels: np.ndarray | None
    test_labels: np.ndarray
    manifest: dict[str, Any]
    transform_spec: TransformSpec = field(repr=False)
    sources: dict[str, Images] = field(repr=False)
    _decoded: dict[str, np.ndarray | None] = field(default_factory=dict, repr=False, init=False)

    def dataset(self, split: Split, augment: bool = False) -> Dataset:
        """A torch Dataset yielding (normalised float image C x H x W, int label).

        ``augment=True`` applies the training augmentation (see :mod:`lort.data.transforms`);
        ``augment=False`` the deterministic eval transform.
        """
        from lort.data.images import ArrayImages, FileImages, Mode
        from lort.data.transforms import build_transform

        labels = self.labels(split)
        images = self.sources[split]
        transform = build_transform(self.transform_spec, augment)
        if isinstance(images, ImageFiles):
            mode: Mode = "L" if self.in_channels == 1 else "RGB"
            return FileImages(images.root, images.paths, labels, transform, mode)
        return ArrayImages(images, labels, transform)

    def labels(self, split: Split) -> np.ndarray:
        """The labels of ``split``, or an error naming a split that does not exist."""
        labels = {"train": self.train_labels, "val": self.val_labels, "test": self.test_labels}
        if split not in labels:
            raise InputError(f"unknown split {split!r}; choose train, val or test")
        found = labels[split]
        if found is None:
            raise InputError(f"{self.name} has no validation set: build it with val_fraction > 0")
        return found

    def tensor_images(self, split: Split, device: torch.device) -> TensorImages | None:
        """The split decoded once onto ``device`` with on-device augmentation (see
        :mod:`lort.data.tensor_images`), or None where that does not apply: datasets other
        than 32-pixel ones, or too many images (an image of another size is refused, see
        :meth:`check_images`)."""
        from lort.data.tensor_images import TensorImages, decode_small

        labels = self.labels(split)
        if self.transform_spec.kind != "small":
            return None
        if split not in self._decoded:  # stage 1 and the feature cache both read train
            self._decoded[split] = decode_small(self.sources[split], self.image_size)
        pixels = self._decoded[split]
        if pixels is None:
            return None
        return TensorImages(pixels, labels, self.transform_spec, device)

    def check_images(self) -> None:
        """Check every image read from files before anything is trained or written: each
        file's header (:func:`lort.data.images.check_headers`: it opens as an image, its pixel
        count is bounded and, where the pipeline reads images at a fixed size with no resize,
        ``small``, it has that size), and the first image of every class in every split
        decoded in full, so that a broken data root is reported up front."""
        from lort.data.images import Mode, check_headers, read_image

        spec = self.transform_spec
        size = spec.image_size if spec.kind == "small" else None
        needs = (
            f"{self.name} images are read at {spec.image_size}x{spec.image_size} with no resize "
            "(the size of the first training image), so every image must have that size"
        )
        mode: Mode = "L" if self.in_channels == 1 else "RGB"
        for split, images in self.sources.items():
            if not isinstance(images, ImageFiles):
                continue
            check_headers([images.root / str(p) for p in images.paths], size, needs)
            labels = self.labels(split)  # type: ignore[arg-type]
            _, first = np.unique(labels, return_index=True)
            for i in first:
                read_image(images.root / str(images.paths[i]), mode)

    def with_transform(self, spec: TransformSpec) -> LTData:
        """The same data read through another pipeline (a pretrained network's own input)."""
        return dataclasses.replace(self, transform_spec=spec, image_size=spec.image_size)

    @property
    def mirrorable(self) -> bool:
        """Whether flip averaging applies to this data (see ``TransformSpec.mirrorable``)."""
        return self.transform_spec.mirrorable

    def train_counts(self) -> np.ndarray:
        """Training images per class (int64, length ``num_classes``)."""
        return np.bincount(self.train_labels, minlength=self.num_classes).astype(np.int64)
