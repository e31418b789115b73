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
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from lort.errors import FileReadError, FileWriteError, InputError, LortError
from lort.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH

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


def digest(path: PathLike, *, follow: bool = True) -> Written:
    """Size and sha256 of a regular file (:func:`open_regular`), read in blocks."""
    h = hashlib.sha256()
    size = 0
    with open_regular(path, follow=follow) as f:
        while block := f.read(_READ_BLOCK):
            h.update(block)
            size += len(block)
    return Written(size, h.hexdigest())


def temp_beside(dest: Path) -> Path:
    """A new temp file's path beside ``dest``, of the :data:`TEMP_FILE` form."""
    return dest.parent / f".{dest.name}.lort-{secrets.token_hex(8)}.tmp"


class NotRegularFile(InputError):
    """A path lort was to read is a FIFO, a device, a socket or a folder (or, where lort
    follows no links, a symbolic link): reading it could block for ever, never end, or read
    a file that is not the one named."""


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, in words (from its ``st_mode``)."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((word for test, word in kinds if test(mode)), "not a regular file")


def not_regular(path: PathLike, mode: int) -> NotRegularFile:
    return NotRegularFile(f"{path} is {kind_of(mode)}, not a regular file; lort reads only those")


def open_regular(path: PathLike, *, follow: bool = True) -> IO[bytes]:
    """``path`` opened for reading once it is a regular file (:class:`NotRegularFile`
    otherwise, checked on the open file, so that nothing can swap a FIFO in between); with
    ``follow=False`` a symbolic link is refused too (inside a run folder, where lort makes
    none). Opened without blocking, so a FIFO never hangs the open; OSError when the file
    cannot be opened at all."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow and os.path.islink(path):
            raise not_regular(path, stat.S_IFLNK) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(path, mode)
        os.set_blocking(fd, True)
        return open(fd, "rb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def regular_file(path: PathLike, what: str) -> Path:
    """``path`` if it is a regular file (links followed): a FIFO, a device or a folder is one
    line naming it (:class:`NotRegularFile`), a missing or unreadable one a FileReadError,
    checked before anything reads it."""
    p = Path(path)
    try:
        open_regular(p).close()
    except NotRegularFile as e:
        raise NotRegularFile(f"{what}: {e}") from None
    except FileNotFoundError:
        raise FileReadError(f"{what} file {p} does not exist") from None
    except OSError as e:
        raise FileReadError(f"cannot read {what} file {p}: {e.strerror}") from None
    return p


def read_bytes(path: PathLike, limit: int, *, follow: bool = True) -> bytes:
    """The bytes of the regular file ``path`` (:func:`open_regular`); ValueError when it
    holds more than ``limit`` bytes (read no further)."""
    with open_regular(path, follow=follow) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit:,} bytes, more than lort reads of such a file")
    return data


# A shape that a JSON value must have (:func:`check_shape`): a type, or a tuple of
# alternatives; ``[shape]`` a list of such items; a dict maps each key lort writes to the
# shape of its value (``"?key"`` where it may be absent, ``"*"`` for the values of any other
# key). ``float`` admits integers, as JSON does not tell them apart; None is ``type(None)``.
Shape = Any


def _name_of(shape: Shape) -> str:
    if isinstance(shape, tuple):
        return " or ".join(_name_of(s) for s in shape)
    if isinstance(shape, list):
        return "a list"
    if isinstance(shape, dict) or shape is dict:
        return "a mapping"
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return words.get(shape, "null" if shape is type(None) else shape.__name__)


def _fits(value: Any, shape: Shape) -> bool:
    if isinstance(shape, tuple):
        return any(_fits(value, s) for s in shape)
    if isinstance(shape, list):
        return isinstance(value, list)
    if isinstance(shape, dict):
        return isinstance(value, dict)
    if isinstance(value, bool):
        return shape is bool
    if shape is float:
        return isinstance(value, int | float)
    return isinstance(value, shape)


def check_shape(value: Any, shape: Shape, where: str = "") -> None:
    """ValueError naming the first place (``a.b[3]``) where ``value`` is not of ``shape``."""
    stack = [(value, shape, where)]
    while stack:
        v, s, at = stack.pop()
        if not _fits(v, s):
            found = (
                "a list" if isinstance(v, list) else "a mapping" if isinstance(v, dict) else None
            )
            what = found or repr(v)[:40]
            raise ValueError(f"{at or 'the file'} is {what}, where lort writes {_name_of(s)}")
        if isinstance(s, tuple):
            s = next(alt for alt in s if _fits(v, alt))
        if isinstance(s, list):
            stack += [(item, s[0], f"{at}[{i}]") for i, item in enumerate(v)]
        elif isinstance(s, dict):
            for key, sub in s.items():
                name = key.removeprefix("?")
                if key == "*":
                    stack += [(v[k], sub, f"{at}.{k}".lstrip(".")) for k in v if k not in s]
                elif name in v:
                    stack.append((v[name], sub, f"{at}.{name}".lstrip(".")))
                elif not key.startswith("?"):
                    raise ValueError(f"{at or 'the file'} has no {name!r}, which lort writes")


def _depth(value: Any) -> int:
    """How deep lists and mappings nest in ``value``, counted up to one past the bound."""
    deepest, stack = 0, [(value, 1)]
    while stack and deepest <= MAX_JSON_DEPTH:
        v, d = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is not None:
            deepest = max(deepest, d)
            stack += [(c, d + 1) for c in children]
    return deepest


def read_json(path: PathLike, shape: Shape, *, follow: bool = True) -> Any:
    """The JSON value in the regular file ``path``, bounded in size and depth
    (:data:`lort.limits.MAX_JSON_BYTES`, :data:`lort.limits.MAX_JSON_DEPTH`) and of
    ``shape`` (:func:`check_shape`); ValueError saying why not, OSError when it cannot be
    read (:class:`NotRegularFile` when it is no regular file)."""
    text = read_bytes(path, MAX_JSON_BYTES, follow=follow)
    too_deep = f"nested deeper than {MAX_JSON_DEPTH} levels, more than lort ever writes"
    try:
        value = json.loads(text)
    except RecursionError:  # json's parser stops itself, long before the stack would
        raise ValueError(too_deep) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ValueError(too_deep)
    check_shape(value, shape)
    return value


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
    with _replacing(dest) as tmp:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        written = _rename(tmp, dest, before_rename)
    return written


@contextmanager
def _replacing(dest: Path) -> Iterator[Path]:
    """A temp file's path beside ``dest`` for the block to write and flush to disk; if the
    block fails, the temp file is removed and a refused write is named (:func:`write_failure`)."""
    tmp = temp_beside(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        failed = write_failure(dest, exc)
        if failed is None:
            raise
        raise failed from exc


def _rename(tmp: Path, dest: Path, before_rename: BeforeRename | None) -> Written:
    """Hash the flushed ``tmp`` (read back: writers such as zipfile seek), tell
    ``before_rename``, then rename it onto ``dest``."""
    written = digest(tmp)
    if before_rename is not None:
        before_rename(written)
    os.replace(tmp, dest)
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
    with _replacing(dest) as tmp:
        target = NpyTarget(np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape))
        yield target
        target.array.flush()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        target.written = _rename(tmp, dest, before_rename)


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


NPY_MAGIC = b"\x93NUMPY"


def load_npy(
    path: PathLike, *, mmap_mode: Literal["r", "c"] | None = None, follow: bool = True
) -> np.ndarray:
    """The one array of the ``.npy`` file ``path`` (memory-mapped with ``mmap_mode``), pickles
    refused; ValueError in words when it is no ``.npy`` file (an ``.npz`` archive, which
    would otherwise be opened lazily as a zip, is refused from its first bytes) or when its
    array does not fit in memory; :class:`NotRegularFile` and OSError as
    :func:`open_regular`."""
    with open_regular(path, follow=follow) as f:
        start = f.read(len(NPY_MAGIC))
        if start != NPY_MAGIC:
            if not start:
                raise ValueError("the file is empty (0 bytes)")
            if start.startswith(b"PK"):
                raise ValueError(
                    "it is a zip archive (an .npz?), not one .npy array; save one array "
                    "with np.save"
                )
            raise ValueError("it is not a .npy file (it does not start as one)")
        try:
            if mmap_mode is not None:
                return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
            f.seek(0)
            return np.load(f, allow_pickle=False)
        except MemoryError as e:  # numpy's ArrayMemoryError says the shape and the size
            raise ValueError(f"its array does not fit in memory ({e})") from None
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(npy_error(e)) from None


class NotPlainData(InputError):
    """A torch file whose pickle would build objects other than tensors and plain values."""


def torch_data(f: IO[bytes] | PathLike) -> Any:
    """``torch.load`` of tensors and plain values only (all a checkpoint lort writes holds):
    a pickle that would build any other object, and so could run code, is refused as
    :class:`NotPlainData` in one line (torch's own text runs to many, and suggests loading
    it anyway). Anything else a damaged file raises passes through."""
    import pickle

    import torch

    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise NotPlainData(
                "it holds objects other than tensors and plain values, which lort never loads "
                "(they could run code)"
            ) from None
        raise


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
