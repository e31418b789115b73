"""Writing files so that a reader, or a kill, never sees half of one; and the JSON forms of
numbers. Every file lort writes goes through :func:`atomic_write`."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from lort.errors import FileWriteError, LortError

PathLike = str | os.PathLike[str]


# The temp files of :func:`atomic_write`: ``.NAME.lort-HEX.tmp`` (16 hex digits). The
# ``lort-`` marker is what tells a temp file of lort's from a file of the user's that merely
# ends in ``.tmp``: only names of this form are ever removed as leftovers of a write.
TEMP_FILE = re.compile(r"^\..+\.lort-[0-9a-f]{16}\.tmp$")
_READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class Written:
    """What a file holds: its size and the sha256 of its bytes."""

    size: int
    sha256: str


def digest(path: PathLike) -> Written:
    """Size and sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_READ_BLOCK):
            h.update(block)
            size += len(block)
    return Written(size, h.hexdigest())


def temp_beside(dest: Path) -> Path:
    """A new temp file's path beside ``dest``, of the :data:`TEMP_FILE` form."""
    return dest.parent / f".{dest.name}.lort-{secrets.token_hex(8)}.tmp"


# Called with what a temp file holds just before it is renamed onto its destination (a run
# folder records it there as pending, so that a kill between the rename and the record leaves
# a file its record still vouches for).
BeforeRename = Callable[[Written], None]


def atomic_write(
    path: PathLike, write: Callable[[IO[bytes]], None], before_rename: BeforeRename | None = None
) -> Written:
    """Call ``write(f)`` on a temp file beside ``path``, flush it to disk, then rename it to
    ``path``; returns the size and sha256 of what was written. ``before_rename``, if given, is
    called with them just before the rename. The temp file is opened like any new file (so it
    gets the umask's mode, unlike mkstemp's 0600) and removed if anything fails."""
    dest = Path(path)
    tmp = temp_beside(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        written = digest(tmp)  # read back: writers such as zipfile seek, so hash afterwards
        if before_rename is not None:
            before_rename(written)
        os.replace(tmp, dest)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        failed = write_failure(dest, exc)
        if failed is None:
            raise
        raise failed from exc
    return written


def write_failure(dest: Path, exc: BaseException) -> FileWriteError | None:
    """The error naming ``dest`` of a write the file system refused: an OSError, or one
    behind a writer's own error (torch.save's ``[enforce fail at inline_container.cc]``, whose
    context is the OSError); None for anything else (a lort error passes through)."""
    if isinstance(exc, LortError):
        return None
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    if isinstance(seen, OSError):
        why = seen.strerror or str(seen) or type(seen).__name__
        if seen.errno in (errno.ENOSPC, errno.EDQUOT):
            why += "; free space on its disk and run the command again"
        return FileWriteError(f"cannot write {dest}: {why}")
    if isinstance(exc, RuntimeError) and "inline_container" in str(exc):
        return FileWriteError(
            f"cannot write {dest}: the write stopped short (is its disk full?); free space "
            "on its disk and run the command again"
        )
    return None


class NpyTarget:
    """A preallocated ``.npy`` temp file mapped for writing (:func:`atomic_npy`): fill
    ``array``; once the block ends, ``written`` is what the renamed file holds."""

    def __init__(self, array: np.memmap) -> None:
        self.array = array
        self.written: Written | None = None


@contextmanager
def atomic_npy(
    path: PathLike,
    shape: tuple[int, ...],
    dtype: np.dtype | type,
    before_rename: BeforeRename | None = None,
) -> Iterator[NpyTarget]:
    """A ``.npy`` file of ``shape`` and ``dtype`` written in place, without the array ever
    being whole in memory: the block fills the memmap of a temp file beside ``path`` (batch by
    batch), which is then flushed, hashed and renamed as :func:`atomic_write` does; removed if
    the block fails."""
    dest = Path(path)
    tmp = temp_beside(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = NpyTarget(np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape))
        yield target
        target.array.flush()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        target.written = digest(tmp)
        if before_rename is not None:
            before_rename(target.written)
        os.replace(tmp, dest)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        failed = write_failure(dest, exc)
        if failed is None:
            raise
        raise failed from exc


def write_text(path: PathLike, text: str, before_rename: BeforeRename | None = None) -> Written:
    return atomic_write(path, lambda f: f.write(text.encode()), before_rename)


def write_json(path: PathLike, data: Any, before_rename: BeforeRename | None = None) -> Written:
    """Indented JSON; NaN and infinity are refused (see :func:`finite_or_none`)."""
    return write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n", before_rename)


def write_yaml(path: PathLike, data: Any, before_rename: BeforeRename | None = None) -> Written:
    import yaml

    return write_text(path, yaml.safe_dump(data, sort_keys=False), before_rename)


def write_csv(
    path: PathLike,
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    before_rename: BeforeRename | None = None,
) -> Written:
    """One header line, then the rows; None becomes an empty cell."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else v for v in row])
    return write_text(path, buf.getvalue(), before_rename)


def write_npy(
    path: PathLike, array: np.ndarray, before_rename: BeforeRename | None = None
) -> Written:
    return atomic_write(path, lambda f: np.save(f, array), before_rename)


def write_npz(
    path: PathLike, arrays: dict[str, np.ndarray], before_rename: BeforeRename | None = None
) -> Written:
    return atomic_write(path, lambda f: np.savez(f, **arrays), before_rename)


def save_torch(path: PathLike, obj: Any, before_rename: BeforeRename | None = None) -> Written:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), before_rename)


def npy_error(e: Exception) -> str:
    """Why ``np.load`` refused a file, in words: numpy raises EOFError ("No data left in
    file") on an empty one, which click would otherwise take for an aborted prompt."""
    return "the file is empty (0 bytes)" if isinstance(e, EOFError) else str(e)


def finite_or_none(x: float) -> float | None:
    """A float for JSON, which has no NaN or infinity (rho is infinite at delta = 0)."""
    return x if math.isfinite(x) else None


def jsonable(a: np.ndarray) -> list[Any]:
    """An array as a JSON list: floats with NaN/Inf as None, integers as they are."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return [None if not math.isfinite(v) else float(v) for v in a.tolist()]
    return a.tolist()
