"""features: a folder of ``.npy`` arrays made by any network (CLIP, DINOv2, an in-house model).

``DIR/train_features.npy`` (N x D, float16/32/64) with ``DIR/train_labels.npy`` (N integers),
the same for ``test`` and optionally ``val``; optionally ``DIR/<split>_flipped_features.npy``
(the features of each image's mirror image, for every split or for none) and
``DIR/class_names.txt`` (one name per line, line i naming class i). K is the number of names,
or else the largest label plus one; every class needs a training sample. The arrays are mapped,
never copied whole: the long-tail cut and the validation split select rows of both views
(:class:`lort.data.sources.FeatureRows`), which the run's feature cache copies block by block
(as float32, or float16 with ``--cache-dtype float16``). Counts are natural unless an
imbalance ratio is given (as for ``imagefolder``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from lort.data.sources import FeatureRows, RawSplits, require_root
from lort.data.transforms import TransformSpec
from lort.errors import InputError
from lort.files import NotRegularFile, load_npy, read_bytes
from lort.limits import MAX_FEATURE, MAX_JSON_BYTES

HINT = "Point --data-root at the folder that holds train_features.npy and train_labels.npy."
SPLITS = ("train", "val", "test")
# Rows checked for NaN / Inf at a time (bounded memory on large files).
CHUNK_ROWS = 65_536


def layout_text(root: Path) -> str:
    return (
        f"  {root}/train_features.npy, train_labels.npy   (N x D floats, N integer labels)\n"
        f"  {root}/test_features.npy, test_labels.npy     (the same D)\n"
        f"  {root}/val_*.npy, <split>_flipped_features.npy, class_names.txt   (optional)"
    )


def ships_validation(data_root: str | Path | None) -> bool:
    """Whether the folder holds its own validation split."""
    return data_root is not None and (Path(data_root).expanduser() / "val_labels.npy").is_file()


def _load(path: Path) -> np.ndarray:
    try:
        return load_npy(path, mmap_mode="r")
    except NotRegularFile as e:
        raise InputError(f"features: {e}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"features: cannot read {path} as a .npy array: {e}") from None


def _features(path: Path, dim: int | None) -> np.ndarray:
    a = _load(path)
    if a.ndim != 2 or a.dtype.kind != "f":
        raise InputError(
            f"features: {path} must be a 2-D float array (rows x feature dim), "
            f"got shape {a.shape} of {a.dtype}"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"features: {path} is empty (shape {a.shape})")
    if dim is not None and a.shape[1] != dim:
        raise InputError(
            f"features: {path} has {a.shape[1]} features per row, train_features.npy has {dim}"
        )
    check_rows(a, f"features: {path}")
    return a


def check_rows(a: np.ndarray, where: str, first: int = 0) -> None:
    """Refuse feature rows holding NaN, Inf or a value beyond :data:`MAX_FEATURE` in
    magnitude (one line naming ``where`` and the row, ``a``'s first row being row ``first``),
    in chunks of bounded memory."""
    for start in range(0, a.shape[0], CHUNK_ROWS):
        chunk = a[start : start + CHUNK_ROWS]
        bad = ~np.isfinite(chunk).all(axis=1)
        if bad.any():
            raise InputError(f"{where} row {first + start + int(np.argmax(bad))} holds NaN or Inf")
        # float16's finite values are within the bound (which would overflow its cast)
        if float(np.finfo(a.dtype).max) <= MAX_FEATURE:
            continue
        big = (np.abs(chunk) > MAX_FEATURE).any(axis=1)
        if big.any():
            row = int(np.argmax(big))
            top = float(np.abs(chunk[row]).max())
            raise InputError(
                f"{where} row {first + start + row} holds a value of magnitude {top:.3g}, beyond "
                f"{MAX_FEATURE:.0e}, where float32 arithmetic on the features overflows; scale "
                "the features down (divide by a constant, or L2-normalise each row)"
            )


def _labels(path: Path, rows: int) -> np.ndarray:
    a = _load(path)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise InputError(
            f"features: {path} must be a 1-D array of integers, got shape {a.shape} of {a.dtype}"
        )
    if a.shape[0] != rows:
        raise InputError(f"features: {path} has {a.shape[0]} labels for {rows} feature rows")
    if a.dtype.kind == "i" and a.min() < 0:
        raise InputError(f"features: {path} holds a negative label ({int(a.min())})")
    if a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise InputError(f"features: {path} holds label {int(a.max())}, beyond any class index")
    return np.array(a, dtype=np.int64)  # a writable copy (torch takes no read-only array)


def _class_names(root: Path, labels: dict[str, np.ndarray]) -> list[str]:
    top = max(int(y.max()) for y in labels.values())
    # every class needs a training sample: no label reaches the training rows (a label near
    # 2^63 would otherwise size the classes, and wrap round as int64)
    if top >= len(labels["train"]):
        split = next(s for s, y in labels.items() if int(y.max()) == top)
        raise InputError(
            f"features: {split}_labels.npy holds label {top}, but train_labels.npy has only "
            f"{len(labels['train'])} rows, and every class needs a training sample (labels "
            "are class indices 0, 1, ...)"
        )
    path = root / "class_names.txt"
    if not path.exists():
        return [str(c) for c in range(top + 1)]
    try:
        text = read_bytes(path, MAX_JSON_BYTES).decode()
    except NotRegularFile as e:
        raise InputError(f"features: {e}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"features: cannot read {path} as text: {e}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise InputError(f"features: {path} names a class twice")
    if top >= len(names):
        split = next(s for s, y in labels.items() if int(y.max()) == top)
        raise InputError(
            f"features: {split}_labels.npy holds label {top}, but {path} names "
            f"{len(names)} classes (labels must lie in [0, {len(names)}))"
        )
    return names


def load_feature_splits(data_root: str | Path | None) -> RawSplits:
    """Read and check ``data_root``'s arrays (see the module docstring)."""
    root = require_root("features", data_root, layout_text, HINT)
    # exists(), not is_file(): a FIFO or a device there is refused by name when read
    present = [s for s in SPLITS if (root / f"{s}_features.npy").exists()]
    for split in ("train", "test"):
        if split not in present:
            raise InputError(
                f"features: {root / f'{split}_features.npy'} is missing. Expected layout:\n"
                f"{layout_text(root)}"
            )
    for split in SPLITS:
        if (split in present) != (root / f"{split}_labels.npy").exists():
            raise InputError(
                f"features: give {split}_features.npy and {split}_labels.npy together in {root}"
            )
    flipped = [s for s in present if (root / f"{s}_flipped_features.npy").exists()]
    if flipped and flipped != present:
        raise InputError(
            f"features: {root} has flipped features for {', '.join(flipped)} only; give "
            f"<split>_flipped_features.npy for every split ({', '.join(present)}) or for none"
        )
    arrays: dict[str, FeatureRows] = {}
    labels: dict[str, np.ndarray] = {}
    dim = None
    for split in present:
        plain = _features(root / f"{split}_features.npy", dim)
        dim = plain.shape[1]
        labels[split] = _labels(root / f"{split}_labels.npy", plain.shape[0])
        mirror = None
        if flipped:
            mirror = _features(root / f"{split}_flipped_features.npy", dim)
            if mirror.shape != plain.shape:
                raise InputError(
                    f"features: {split}_flipped_features.npy has shape {mirror.shape}, "
                    f"{split}_features.npy {plain.shape}"
                )
        arrays[split] = FeatureRows(plain, mirror)
    names = _class_names(root, labels)
    counts = np.bincount(labels["train"], minlength=len(names))
    if (counts == 0).any():
        empty = int(np.argmax(counts == 0))
        raise InputError(
            f"features: class {empty} ({names[empty]}) has no training sample in "
            f"train_labels.npy; every one of the {len(names)} classes needs one"
        )
    digest = hashlib.sha256()
    for split in present:
        digest.update(f"{split}:{labels[split].size};".encode())
        digest.update(labels[split].astype("<i8").tobytes())
    return RawSplits(
        class_names=names,
        transform_spec=TransformSpec("features", 0, (), (), mirror=bool(flipped)),
        in_channels=int(dim or 0),
        train_labels=labels["train"],
        train_images=arrays["train"],
        test_labels=labels["test"],
        test_images=arrays["test"],
        n_max=int(counts.max()),
        default_ratio=None,
        val_labels=labels.get("val"),
        val_images=arrays.get("val"),
        manifest_extra={"labels_sha256": digest.hexdigest(), "feature_dim": int(dim or 0)},
    )
