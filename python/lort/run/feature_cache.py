"""The run folder's feature cache: one ``.npy`` per split and view in ``RUN/features/``
(``train.npy``, ``train_flip.npy``, ...), each filled in place while it is extracted or copied
(a preallocated memmap, never the whole array in memory), renamed and recorded in ``state.json``
like every run file; ``features/index.json``, written after them, lists them. Readers map the
files instead of loading them. Runs made before keep their one ``features.npz``, which is still
read."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import numpy as np
from torch import nn

from lort.data import LTData
from lort.data.sources import FeatureRows
from lort.errors import DamagedFileError
from lort.run.folder import FEATURES, FEATURES_DIR, OLD_FEATURES, RunFolder
from lort.runtime import Runtime
from lort.stage1.features import BATCH, KEYS, Alloc, EvalSet, FeatureCache, Views, extract_into, key

# Bytes of given features copied into the cache at a time.
COPY_BYTES = 64 << 20


def array_file(name: str) -> str:
    """The run-folder path of the cache's array ``name`` (a :data:`KEYS` entry)."""
    return f"{FEATURES_DIR}/{name}.npy"


def _write_split(
    folder: RunFolder, stack: ExitStack, split: str, n: int, flip: bool, dtype: str
) -> Alloc:
    """The ``alloc`` that opens a split's files in the run folder for filling (renamed and
    recorded when ``stack`` closes)."""

    def alloc(dim: int) -> Views:
        names = [key(split)] + ([key(split, True)] if flip else [])
        out = stack.enter_context(
            folder.write_arrays({array_file(k): ((n, dim), np.dtype(dtype)) for k in names})
        )
        return out[array_file(key(split))], out.get(array_file(key(split, True)))

    return alloc


def _write_index(folder: RunFolder, shapes: dict[str, tuple[int, ...]], dtype: str) -> None:
    """The index, once every array is written; arrays of an earlier cache it does not list
    are removed."""
    folder.write_json(FEATURES, {"dtype": dtype, "arrays": {k: list(s) for k, s in shapes.items()}})
    for p in folder.path(FEATURES_DIR).glob("*.npy"):
        if p.stem not in shapes:
            p.unlink()


def save_extracted(
    folder: RunFolder,
    backbone: nn.Module,
    datasets: dict[str, EvalSet],
    rt: Runtime,
    *,
    flip: bool,
    dtype: str,
) -> None:
    """Extract the features of ``datasets`` straight into the run folder's cache files."""
    shapes: dict[str, tuple[int, ...]] = {}
    for split, ds in datasets.items():
        with ExitStack() as stack:
            alloc = _write_split(folder, stack, split, len(ds), flip, dtype)  # type: ignore[arg-type]
            plain, mirrored = extract_into(
                backbone, ds, rt, flip=flip, alloc=alloc, batch_size=BATCH, workers=0
            )
            shapes[split] = plain.shape
            if mirrored is not None:
                shapes[key(split, True)] = mirrored.shape
    _write_index(folder, shapes, dtype)


def save_given(folder: RunFolder, data: LTData, *, flip: bool, dtype: str) -> None:
    """A ``features`` dataset's cache: its selected rows (each split N x D, with the mirrored
    view when the data has one and ``flip``) copied into the run folder block by block."""
    shapes: dict[str, tuple[int, ...]] = {}
    for split, rows in data.sources.items():
        assert isinstance(rows, FeatureRows)
        mirrored = flip and rows.mirror is not None
        n, dim = len(rows), rows.plain.shape[1]
        step = max(1, COPY_BYTES // (4 * dim))
        with ExitStack() as stack:
            plain, flipped = _write_split(folder, stack, split, n, mirrored, dtype)(dim)
            for start in range(0, n, step):
                stop = min(n, start + step)
                plain[start:stop] = rows.block(start, stop)
                if flipped is not None:
                    flipped[start:stop] = rows.block(start, stop, mirrored=True)
        shapes[split] = (n, dim)
        if mirrored:
            shapes[key(split, True)] = (n, dim)
    _write_index(folder, shapes, dtype)


def _damaged(folder: RunFolder, why: str) -> DamagedFileError:
    p = folder.path(FEATURES)
    return DamagedFileError(
        f"{p} is damaged ({why}); `lort fit --resume --out {folder.root}` makes it again", FEATURES
    )


def _index(folder: RunFolder) -> dict[str, list[int]]:
    index: Any = folder.read_json(FEATURES)
    arrays = index.get("arrays") if isinstance(index, dict) else None
    if not isinstance(arrays, dict) or not set(arrays) <= set(KEYS) or "train" not in arrays:
        raise _damaged(folder, "not a feature cache's index")
    for shape in arrays.values():
        if not (isinstance(shape, list) and len(shape) == 2 and all(type(v) is int for v in shape)):
            raise _damaged(folder, f"the shape {shape!r} is not rows x dim")
    return arrays


def open_cache(folder: RunFolder) -> FeatureCache:
    """The run's feature cache, every file checked against its record first: the arrays
    mapped (copy on write: the files never change), or a run's old ``features.npz`` loaded."""
    if not folder.path(FEATURES).exists() and folder.path(OLD_FEATURES).is_file():
        return FeatureCache(folder.load_npz(OLD_FEATURES))
    arrays = {}
    for name, shape in _index(folder).items():
        a = folder.load_npy(array_file(name), mmap=True, writable=True)
        if list(a.shape) != shape or a.dtype not in (np.float32, np.float16):
            raise DamagedFileError(
                f"{folder.path(array_file(name))} holds {a.dtype} {list(a.shape)}, not the "
                f"float {shape} its index lists; `lort fit --resume --out {folder.root}` makes "
                "it again",
                array_file(name),
            )
        arrays[name] = a
    return FeatureCache(arrays)
