"""``build_dataset``: load a dataset, cut its training set to a long tail, pick validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lort.data.cifar import LAYOUTS as CIFAR_LAYOUTS
from lort.data.cifar import load_cifar_splits
from lort.data.digits import load_digits_splits
from lort.data.feature_files import load_feature_splits, ships_validation
from lort.data.imagefolder import load_imagefolder_splits
from lort.data.listfile import LAYOUTS as LIST_LAYOUTS
from lort.data.listfile import load_list_splits
from lort.data.ltdata import LTData
from lort.data.manifest import make_manifest
from lort.data.profile import SplitRule, keep_long_tail, long_tail_counts
from lort.data.sources import Images, RawSplits, take
from lort.data.split import (
    ValSplit,
    leftover_per_class,
    leftover_val_split,
    stratified_val_split,
)
from lort.errors import InputError
from lort.options import LT_SPLITS, VAL_SPLITS

DATASETS: tuple[str, ...] = (
    "digits-lt",
    "cifar10-lt",
    "cifar100-lt",
    "imagefolder",
    "imagenet-lt",
    "inat2018",
    "features",
)


def ships_val(name: str, data_root: str | Path | None) -> bool:
    """Whether the source ships its own validation split (imagenet-lt's list, a features
    folder with ``val_*`` arrays)."""
    if name in LIST_LAYOUTS:
        return LIST_LAYOUTS[name].val is not None
    return name == "features" and ships_validation(data_root)


def takes_leftover(name: str, imbalance_ratio: float | None, data_root: str | Path | None) -> bool:
    """Whether ``val_split="leftover"`` draws validation from the images the long-tail profile
    did not keep: a profile is applied (the CIFAR sets and digits-lt always, imagefolder and
    features with an imbalance ratio) and the source ships no validation split. Elsewhere
    "leftover" means the shipped split, or the ``val_fraction`` carve where there is none."""
    if name in LIST_LAYOUTS or ships_val(name, data_root):
        return False
    return name in CIFAR_LAYOUTS or name == "digits-lt" or imbalance_ratio is not None


def check_options(
    name: str,
    imbalance_ratio: float | None,
    lt_split: str,
    val_split: str,
    val_fraction: float,
    download: bool,
) -> None:
    """Reject unknown names and options that the dataset cannot honour, before any reading."""
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if lt_split not in LT_SPLITS:
        raise InputError(f"unknown split rule {lt_split!r}; choose one of {', '.join(LT_SPLITS)}")
    if val_split not in VAL_SPLITS:
        raise InputError(
            f"unknown validation rule {val_split!r}; choose one of {', '.join(VAL_SPLITS)}"
        )
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if download and name not in CIFAR_LAYOUTS:
        raise InputError(f"--download is only for cifar10-lt and cifar100-lt, not {name}")
    if name in LIST_LAYOUTS and imbalance_ratio is not None:
        raise InputError(
            f"{name} is long-tailed as its lists give it: leave the imbalance ratio unset"
        )
    if name in LIST_LAYOUTS and LIST_LAYOUTS[name].val is not None and val_fraction > 0.0:
        raise InputError(f"{name} ships its own validation list: leave val_fraction at 0")


def load_raw(name: str, data_root: str | Path | None, seed: int, download: bool) -> RawSplits:
    """Dispatch to the dataset's loader."""
    if name == "digits-lt":
        return load_digits_splits(seed)
    if name in CIFAR_LAYOUTS:
        return load_cifar_splits(name, data_root, download)
    if name == "imagefolder":
        return load_imagefolder_splits(data_root)
    if name == "features":
        return load_feature_splits(data_root)
    return load_list_splits(name, data_root)


def build_dataset(
    name: str,
    *,
    data_root: str | Path | None = None,
    imbalance_ratio: float | None = None,
    lt_split: SplitRule = "ltwb",
    val_split: ValSplit = "fraction",
    val_fraction: float = 0.0,
    seed: int = 0,
    download: bool = False,
) -> LTData:
    """Build one of :data:`DATASETS`.

    ``imbalance_ratio=None`` takes the dataset's default: 10 for digits-lt, 100 for the
    CIFAR sets, natural counts for imagefolder and features; imagenet-lt and inat2018 are
    long-tailed as listed and take no ratio. ``lt_split`` picks the rule that applies the
    profile (see :mod:`lort.data.profile`; ``ldam`` always uses LDAM-DRW's fixed seed 0).
    ``seed`` draws the digits test set and the validation split. ``val_fraction > 0`` carves a
    stratified validation set out of the long-tailed training set (imagenet-lt ships its own
    instead, as may a features folder). Without it, ``val_split="leftover"`` draws a balanced
    validation set from the images the profile did not keep where :func:`takes_leftover` says
    so (see :func:`lort.data.split.leftover_val_split`); ``"fraction"`` leaves none.
    ``data_root`` is not used by digits-lt; ``download`` only by the CIFAR sets.
    """
    check_options(name, imbalance_ratio, lt_split, val_split, val_fraction, download)
    raw = load_raw(name, data_root, seed, download)
    if raw.val_labels is not None and val_fraction > 0.0:
        raise InputError(
            f"{name}: {data_root} ships its own validation split; leave val_fraction at 0"
        )
    num_classes = len(raw.class_names)
    ratio = raw.default_ratio if imbalance_ratio is None else float(imbalance_ratio)
    if ratio is None or raw.n_max is None:
        ratio, n_max, split_rule = None, None, "natural"
        kept = np.arange(raw.train_labels.size, dtype=np.int64)
    else:
        n_max, split_rule = raw.n_max, lt_split
        counts = long_tail_counts(n_max, num_classes, ratio)
        kept = keep_long_tail(raw.train_labels, counts, lt_split)

    leftover = (
        val_split == "leftover"
        and val_fraction == 0.0
        and takes_leftover(name, imbalance_ratio, data_root)
    )
    if leftover:
        assert n_max is not None  # takes_leftover implies a profile
        per_class = leftover_per_class(num_classes, n_max)
        train_idx, val_idx, from_kept = leftover_val_split(
            raw.train_labels, kept, num_classes, per_class, seed
        )
        val_rule = leftover_rule(per_class, from_kept, raw.class_names)
    else:
        train_pos, val_pos = stratified_val_split(raw.train_labels[kept], val_fraction, seed)
        train_idx, val_idx = kept[train_pos], kept[val_pos]
        from_kept = np.bincount(raw.train_labels[val_idx], minlength=num_classes)
        val_rule = (
            f"fraction {val_fraction:g} carved from training"
            if val_fraction > 0.0
            else "shipped with the dataset"
            if raw.val_labels is not None
            else "none"
        )
    ids = np.arange(raw.train_labels.size) if raw.train_ids is None else raw.train_ids
    sources: dict[str, Images] = {
        "train": take(raw.train_images, train_idx),
        "test": raw.test_images,
    }
    val_labels, val_ids = raw.val_labels, None
    if leftover or val_fraction > 0.0:
        val_labels, val_ids = raw.train_labels[val_idx], ids[val_idx]
        sources["val"] = take(raw.train_images, val_idx)
    elif raw.val_images is not None:
        sources["val"] = raw.val_images

    train_labels = raw.train_labels[train_idx]
    empty = np.flatnonzero(np.bincount(train_labels, minlength=num_classes) == 0)
    if ratio is not None and empty.size:
        names = ", ".join(raw.class_names[i] for i in empty[:5]) + (
            " ..." if empty.size > 5 else ""
        )
        raise InputError(
            f"{name}: imbalance ratio {ratio:g} leaves {empty.size} class(es) without a training "
            f"image ({names}): the head class has {n_max}, so use a ratio of at most {n_max}"
        )
    spec = raw.transform_spec
    manifest = (
        make_manifest(
            dataset=name,
            data_root=None if name == "digits-lt" or data_root is None else Path(data_root),
            imbalance_ratio=ratio,
            split_rule=split_rule,
            n_max=n_max,
            seed=seed,
            val_fraction=val_fraction,
            val_rule=val_rule,
            val_from_kept=from_kept,
            class_names=raw.class_names,
            image_size=spec.image_size,
            train_labels=train_labels,
            val_labels=val_labels,
            test_labels=raw.test_labels,
            kept_ids=ids[kept],
            val_ids=val_ids,
            warnings=raw.warnings,
        )
        | raw.manifest_extra
    )
    return LTData(
        name=name,
        num_classes=num_classes,
        class_names=raw.class_names,
        image_size=spec.image_size,
        in_channels=raw.in_channels,
        train_labels=train_labels,
        val_labels=val_labels,
        test_labels=raw.test_labels,
        manifest=manifest,
        transform_spec=spec,
        sources=sources,
    )


def leftover_rule(per_class: int, from_kept: np.ndarray, class_names: list[str]) -> str:
    """The manifest's ``val_rule`` for the leftover split: V, and which classes gave up how
    many of their kept images (under the profile, the head class alone)."""
    rule = f"leftover: {per_class} per class from the images the profile did not keep"
    gave = [f"{class_names[c]} {int(from_kept[c])}" for c in np.flatnonzero(from_kept)]
    if gave:
        shown = ", ".join(gave[:5]) + (f" and {len(gave) - 5} more" if len(gave) > 5 else "")
        rule += f"; too few left over, so taken from the kept images: {shown}"
    return rule
