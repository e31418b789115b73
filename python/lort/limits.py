"""The largest value each count option takes. A count is checked against its bound when the
option is read, before anything is built or written: a typo such as ``--seeds 100000000``
or ``--threads 100000`` is one line saying what the bound is, not a command that grows
until the machine runs out of memory or threads. Each bound is far above any real use."""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence

from lort.errors import InputError, OptionError

MAX_SEEDS = 1000  # compare --seeds
MAX_THREADS = 1024  # analyze / fit --threads, LORT_NUM_THREADS
MAX_WORKERS = 256  # fit / predict --workers (processes)
MAX_EPOCHS = 10_000  # --epochs1, --epochs2
MAX_BATCH = 1 << 16  # --batch1, --batch2, predict --batch-size
MAX_TOP_K = 10_000  # predict --top-k
MAX_INPUTS = 1 << 27  # inputs of one predict call (it holds every result in memory)
MAX_GRID = 1000  # values of one list (smooth_grid, sweep --smooth / --lr / --wd), grid points
MAX_SEED = (1 << 32) - 1  # --seed (NumPy's seed range)
MAX_IMAGE_PIXELS = 1 << 26  # pixels of one image file (8192 x 8192), read from its header
# JSON files lort reads back (state.json, report.json, manifest.json, compare and sweep points
# and tables): lort's own nest a few levels deep and stay far below a megabyte.
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 32
MAX_TAU = 10.0  # --tau (the authors' is 1, lort's search 0..2; ||W||^tau overflows beyond)
# The largest feature magnitude (--dataset features, predict's feature arrays): far above any
# network's features, and far enough below float32's 3.4e38 that the heads' arithmetic (logits
# of trained weights, their squares and squared norms) cannot overflow.
MAX_FEATURE = 1e6


def check_count(value: int, name: str, low: int, high: int) -> int:
    """``value`` unless it is no integer or lies outside ``[low, high]``: then an InputError
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low:,} and {high:,}, got {value:,}")
    return value


def check_option_count(value: int, key: str, low: int, high: int) -> int:
    """:func:`check_count` for the option ``key``: an OptionError, named as the caller spells
    the option (the API's parameter, the command's flag)."""
    try:
        return check_count(value, "{" + key + "}", low, high)
    except InputError as e:
        raise OptionError(str(e), key) from None


def env_threads() -> int | None:
    """LORT_NUM_THREADS as a thread count (None when unset), bounded like --threads."""
    value = os.environ.get("LORT_NUM_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise InputError(f"LORT_NUM_THREADS={value!r} is not a positive integer")
    return check_count(int(value), "LORT_NUM_THREADS", 1, MAX_THREADS)


def threads(value: int | None, name: str = "threads") -> int | None:
    """The thread count of a call or a flag (``value``), else LORT_NUM_THREADS, else None
    (the default): bounded by :data:`MAX_THREADS` wherever it comes from, before the core
    starts a thread."""
    if value is None:
        return env_threads()
    return check_count(value, name, 1, MAX_THREADS)


def check_grid(values: Sequence[object], name: str) -> None:
    """An InputError when a list of values to re-train over holds more than :data:`MAX_GRID`
    (repeats counted: a list that long is a mistake, whatever it repeats)."""
    if len(values) > MAX_GRID:
        raise InputError(f"{name} gives {len(values):,} values, at most {MAX_GRID:,}")
