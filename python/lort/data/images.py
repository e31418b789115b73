"""torch ``Dataset`` views of one split: images held in memory or read from files.

Both are safe to pickle and to fork into DataLoader workers: they hold NumPy arrays (no
Python lists of strings, whose reference counts would copy pages after a fork) and open each
image file only inside ``__getitem__``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lort.errors import FileReadError


class ArrayImages(Dataset):
    """Images from an array: N x H x W x 3 uint8 (decoded as PIL) or N x C x H x W float32."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Any], torch.Tensor]
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        decoded = Image.fromarray(image) if image.dtype == np.uint8 else torch.from_numpy(image)
        return self.transform(decoded), int(self.labels[index])


class FileImages(Dataset):
    """Images read with PIL (converted to RGB) from paths relative to ``root``."""

    def __init__(
        self,
        root: Path,
        paths: np.ndarray,
        labels: np.ndarray,
        transform: Callable[[Any], torch.Tensor],
    ) -> None:
        self.root = root
        self.paths = paths
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rgb = read_rgb(self.root / str(self.paths[index]))
        return self.transform(rgb), int(self.labels[index])


def read_rgb(path: Path) -> Image.Image:
    """An image file decoded and converted to RGB; FileReadError naming it otherwise."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise FileReadError(
            f"cannot read image {path}: {exc}; replace or remove the file"
        ) from None
