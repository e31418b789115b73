"""imagefolder: ``root/train/<class>/*`` and ``root/test/<class>/*`` image files.

Classes are the sub-folders of ``train/`` in sorted order (index = position, as torchvision's
ImageFolder assigns them); files are taken in sorted filename order, so the ``ltwb`` rule
keeps the first n_i files of each class. Counts are natural unless an imbalance ratio is
given, in which case n_max is the largest class count.

The first training image decides the pipeline: square images of at most
:data:`SMALL_MAX_SIDE` pixels keep their size and use the 32px CIFAR pipeline with the CIFAR
statistics (all images must then share that size); anything larger is resized and cropped to
224px with the ImageNet statistics.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lort.data.sources import ImageFiles, RawSplits, require_root
from lort.data.transforms import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LARGE_SIZE,
    TransformSpec,
)
from lort.errors import FileReadError, InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SMALL_MAX_SIDE = 64
HINT = "Point --data-root at the folder that holds train/ and test/."


def layout_text(root: Path) -> str:
    """The expected folder layout under ``root``."""
    return (
        f"  {root}/train/<class>/<image>  (one sub-folder per class)\n"
        f"  {root}/test/<class>/<image>   (the same class names)"
    )


def list_images(folder: Path) -> list[str]:
    """Names of the image files directly in ``folder``, sorted."""
    with os.scandir(folder) as entries:
        names = [e.name for e in entries if e.is_file() and not e.name.startswith(".")]
    return sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS))


def read_split(root: Path, split: str, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Paths (relative to ``root``) and labels of ``root/split/<class>/*``."""
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        folder = root / split / name
        if not folder.is_dir():
            continue
        files = list_images(folder)
        paths.extend(f"{split}/{name}/{f}" for f in files)
        labels.extend([label] * len(files))
    return np.array(paths, dtype=str), np.array(labels, dtype=np.int64)


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``folder``."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def pick_transform(first_image: Path) -> TransformSpec:
    """The pipeline for images like ``first_image`` (see the module docstring)."""
    from lort.data.images import open_image

    with open_image(first_image) as image:
        width, height = image.size
    if width == height <= SMALL_MAX_SIDE:
        return TransformSpec("small", width, CIFAR_MEAN, CIFAR_STD)
    return TransformSpec("large", LARGE_SIZE, IMAGENET_MEAN, IMAGENET_STD)


def load_imagefolder_splits(data_root: str | Path | None) -> RawSplits:
    """Scan ``data_root/train`` and ``data_root/test``."""
    root = require_root("imagefolder", data_root, layout_text, HINT)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise FileReadError(
                f"imagefolder: {root / split} is missing. Expected layout:\n"
                f"{layout_text(root)}\n{HINT}"
            )
    class_names = class_folders(root / "train")
    if not class_names:
        raise InputError(f"imagefolder: {root / 'train'} has no class sub-folders")
    unknown = sorted(set(class_folders(root / "test")) - set(class_names))
    if unknown:
        raise InputError(
            f"imagefolder: test classes {', '.join(unknown)} have no folder in {root / 'train'}"
        )
    train_paths, train_labels = read_split(root, "train", class_names)
    counts = np.bincount(train_labels, minlength=len(class_names))
    empty = [name for name, n in zip(class_names, counts, strict=True) if n == 0]
    if empty:
        raise InputError(
            f"imagefolder: no images ({', '.join(IMAGE_EXTENSIONS)}) in "
            + ", ".join(str(root / "train" / name) for name in empty)
        )
    test_paths, test_labels = read_split(root, "test", class_names)
    return RawSplits(
        class_names=class_names,
        transform_spec=pick_transform(root / str(train_paths[0])),
        in_channels=3,
        train_labels=train_labels,
        train_images=ImageFiles(root, train_paths),
        test_labels=test_labels,
        test_images=ImageFiles(root, test_paths),
        n_max=int(counts.max()),
        default_ratio=None,
    )
