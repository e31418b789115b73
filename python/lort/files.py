"""Writing files so that a reader, or a kill, never sees half of one; and the JSON forms of
numbers. Every file lort writes goes through :func:`atomic_write`."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

PathLike = str | os.PathLike[str]


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, flush it to disk, then rename it to
    ``path``. The temp file is opened like any new file (so it gets the umask's mode, unlike
    mkstemp's 0600) and removed if anything fails."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: PathLike, data: Any) -> None:
    """Indented JSON; NaN and infinity are refused (see :func:`finite_or_none`)."""
    write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def write_yaml(path: PathLike, data: Any) -> None:
    import yaml

    write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_csv(path: PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """One header line, then the rows; None becomes an empty cell."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else v for v in row])
    write_text(path, buf.getvalue())


def write_npy(path: PathLike, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


def write_npz(path: PathLike, **arrays: np.ndarray) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def save_torch(path: PathLike, obj: Any) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def finite_or_none(x: float) -> float | None:
    """A float for JSON, which has no NaN or infinity (rho is infinite at delta = 0)."""
    return x if math.isfinite(x) else None


def jsonable(a: np.ndarray) -> list[Any]:
    """An array as a JSON list: floats with NaN/Inf as None, integers as they are."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        return [None if not math.isfinite(v) else float(v) for v in a.tolist()]
    return a.tolist()
