"""imagenet-lt / inat2018: list files of ``relative/path label`` lines under the data root.

ImageNet-LT reads ImageNet_LT_train.txt / _val.txt / _test.txt (115,846 / 20,000 / 50,000
lines); iNaturalist 2018 reads iNaturalist18_train.txt / _val.txt (437,513 / 24,426 lines), its
val list serving as the test set. A list whose line count differs from the published one gives
a warning (also recorded in the manifest). Image paths are relative to the data root. Both
sets are long-tailed as listed; nothing is ever downloaded.

Class names are the parent folder of each class's first training image (the WordNet id for
ImageNet, the category id for iNaturalist), or the label itself where a path has no folder.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from lort.data.sources import ImageFiles, RawSplits, require_root
from lort.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INAT_MEAN,
    INAT_STD,
    LARGE_SIZE,
    TransformSpec,
)
from lort.errors import FileReadError, InputError


@dataclass(frozen=True)
class ListLayout:
    """One list-file dataset: its files with published line counts, classes and pipeline."""

    title: str
    train: tuple[str, int]
    val: tuple[str, int] | None
    test: tuple[str, int]
    num_classes: int
    transform_spec: TransformSpec


LAYOUTS = {
    "imagenet-lt": ListLayout(
        "ImageNet-LT",
        ("ImageNet_LT_train.txt", 115_846),
        ("ImageNet_LT_val.txt", 20_000),
        ("ImageNet_LT_test.txt", 50_000),
        1000,
        TransformSpec("large", LARGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, color_jitter=True),
    ),
    "inat2018": ListLayout(
        "iNaturalist 2018",
        ("iNaturalist18_train.txt", 437_513),
        None,
        ("iNaturalist18_val.txt", 24_426),
        8142,
        TransformSpec("large", LARGE_SIZE, INAT_MEAN, INAT_STD),
    ),
}


def layout_text(layout: ListLayout, root: Path) -> str:
    """The expected list files under ``root`` and where the images go."""
    files = [f for f in (layout.train, layout.val, layout.test) if f is not None]
    lines = [f"  {root / name}  ({n:,} lines of 'relative/path label')" for name, n in files]
    lines.append(f"  {root}/<relative/path>  (the images, at the paths the lists name)")
    return "\n".join(lines)


def is_label(text: str, num_classes: int) -> bool:
    """Whether ``text`` is a decimal label in ``[0, num_classes)``."""
    return text.isascii() and text.isdigit() and int(text) < num_classes


def read_list_file(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Paths and labels of a ``relative/path label`` list; blank lines are skipped."""
    paths: list[str] = []
    labels: list[int] = []
    try:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                text = line.strip()
                if not text:
                    continue
                parts = text.rsplit(maxsplit=1)
                if len(parts) != 2 or not is_label(parts[1], num_classes):
                    raise InputError(
                        f"{path}, line {lineno}: expected 'relative/path label' with a label "
                        f"in [0, {num_classes}), got {text!r}"
                    )
                paths.append(parts[0])
                labels.append(int(parts[1]))
    except OSError as exc:
        raise FileReadError(f"cannot read {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: {exc}") from exc
    return np.array(paths, dtype=str), np.array(labels, dtype=np.int64)


def read_checked(
    root: Path, file: tuple[str, int], num_classes: int, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Read one list, warn (and note) a line count off the published one, check image 1."""
    name, published = file
    paths, labels = read_list_file(root / name, num_classes)
    if labels.size != published:
        message = (
            f"{root / name} lists {labels.size:,} images; the published list has {published:,}"
        )
        warnings.warn(message, stacklevel=4)
        notes.append(message)
    if paths.size and not (root / paths[0]).is_file():
        raise FileReadError(
            f"{root / name}: the first listed image {root / paths[0]} does not exist; "
            "image paths are read relative to --data-root"
        )
    return paths, labels


def class_names_from(paths: np.ndarray, labels: np.ndarray, num_classes: int) -> list[str]:
    """Parent folder of each class's first training image, else the label as text."""
    names = [str(c) for c in range(num_classes)]
    classes, first = np.unique(labels, return_index=True)
    for c, i in zip(classes, first, strict=True):
        parent = PurePosixPath(str(paths[i])).parent.name
        if parent:
            names[c] = parent
    return names


def load_list_splits(name: str, data_root: str | Path | None) -> RawSplits:
    """Read ImageNet-LT or iNaturalist 2018 lists under ``data_root``."""
    layout = LAYOUTS[name]
    hint = f"Point --data-root at the {layout.title} folder; lort never downloads it."
    root = require_root(name, data_root, partial(layout_text, layout), hint)
    files = [f for f in (layout.train, layout.val, layout.test) if f is not None]
    missing = [f for f, _ in files if not (root / f).is_file()]
    if missing:
        raise FileReadError(
            f"{name}: missing {', '.join(missing)} in {root}. Expected layout:\n"
            f"{layout_text(layout, root)}\n{hint}"
        )
    notes: list[str] = []
    train_paths, train_labels = read_checked(root, layout.train, layout.num_classes, notes)
    test_paths, test_labels = read_checked(root, layout.test, layout.num_classes, notes)
    val_paths, val_labels = (
        read_checked(root, layout.val, layout.num_classes, notes)
        if layout.val is not None
        else (None, None)
    )
    return RawSplits(
        class_names=class_names_from(train_paths, train_labels, layout.num_classes),
        transform_spec=layout.transform_spec,
        in_channels=3,
        train_labels=train_labels,
        train_images=ImageFiles(root, train_paths),
        test_labels=test_labels,
        test_images=ImageFiles(root, test_paths),
        n_max=None,
        default_ratio=None,
        val_labels=val_labels,
        val_images=None if val_paths is None else ImageFiles(root, val_paths),
        warnings=notes,
    )
