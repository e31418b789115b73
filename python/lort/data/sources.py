"""What a dataset loader reads from disk, before any long-tail cut or validation split.

A loader returns :class:`RawSplits`: the full training set (labels and images), the test set,
a validation set where the dataset ships one, and what the long-tail profile needs. Images are
either an in-memory array (first axis = image) or :class:`ImageFiles`, paths relative to a
root; :func:`take` subsets either kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lort.data.transforms import TransformSpec
from lort.errors import FileReadError, InputError


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """Image files: ``paths`` (a NumPy string array) relative to ``root``."""

    root: Path
    paths: np.ndarray


@dataclass(frozen=True, eq=False)
class FeatureRows:
    """Rows of feature arrays as given (memmaps of the user's .npy files, never copied whole):
    ``plain`` (N x D) and its ``mirror`` view or None, at ``rows`` (all when None)."""

    plain: np.ndarray
    mirror: np.ndarray | None
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.plain) if self.rows is None else len(self.rows)

    def block(self, start: int, stop: int, mirrored: bool = False) -> np.ndarray:
        """Rows ``start:stop`` (positions in this selection) of one view, read into memory."""
        a = self.mirror if mirrored else self.plain
        assert a is not None
        return a[start:stop] if self.rows is None else a[self.rows[start:stop]]


Images = np.ndarray | ImageFiles | FeatureRows


@dataclass(eq=False)
class RawSplits:
    """A loader's result.

    ``n_max`` is the head count of the long-tail profile and ``default_ratio`` the imbalance
    ratio used when the caller gives none (None: keep the natural counts). ``train_ids`` are
    the ids recorded in the manifest for the training images (default: their positions);
    ``manifest_extra`` holds keys the loader adds to the manifest.
    """

    class_names: list[str]
    transform_spec: TransformSpec
    in_channels: int
    train_labels: np.ndarray
    train_images: Images
    test_labels: np.ndarray
    test_images: Images
    n_max: int | None
    default_ratio: float | None
    val_labels: np.ndarray | None = None
    val_images: Images | None = None
    train_ids: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)
    manifest_extra: dict[str, Any] = field(default_factory=dict)


def take(images: Images, indices: np.ndarray) -> Images:
    """The images at ``indices``, as a new contiguous array or file list (feature rows: the
    selection alone)."""
    if isinstance(images, ImageFiles):
        return ImageFiles(images.root, images.paths[indices])
    if isinstance(images, FeatureRows):
        rows = indices if images.rows is None else images.rows[indices]
        return FeatureRows(images.plain, images.mirror, rows)
    return np.ascontiguousarray(images[indices])


def require_root(
    name: str, data_root: str | Path | None, layout: Callable[[Path], str], hint: str
) -> Path:
    """``data_root`` as a Path to an existing folder, or an error that shows ``layout(root)``."""
    if data_root is None:
        raise InputError(f"{name} reads its images from disk: pass --data-root. {hint}")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise FileReadError(
            f"{name}: data root {root} is not a folder. Expected layout:\n{layout(root)}\n{hint}"
        )
    return root
