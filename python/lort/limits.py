"""The largest value each count option takes. A count is checked against its bound when the
option is read, before anything is built or written: a typo such as ``--seeds 100000000``
or ``--threads 100000`` is one line saying what the bound is, not a command that grows
until the machine runs out of memory or threads. Each bound is far above any real use."""

from __future__ import annotations

import os

from lort.errors import InputError

MAX_SEEDS = 1000  # compare --seeds
MAX_THREADS = 1024  # analyze / fit --threads, LORT_NUM_THREADS
MAX_WORKERS = 256  # fit / predict --workers (processes)
MAX_EPOCHS = 10_000  # --epochs1, --epochs2
MAX_BATCH = 1 << 16  # --batch1, --batch2, predict --batch-size
MAX_TOP_K = 10_000  # predict --top-k
MAX_GRID = 1000  # values of one list (smooth_grid, sweep --smooth / --lr / --wd), grid points
MAX_SEED = (1 << 32) - 1  # --seed (NumPy's seed range)
MAX_IMAGE_PIXELS = 1 << 26  # pixels of one image file (8192 x 8192), read from its header
MAX_TAU = 10.0  # --tau (the authors' is 1, lort's search 0..2; ||W||^tau overflows beyond)
# The largest feature magnitude (--dataset features, predict's feature arrays): far above any
# network's features, and far enough below float32's 3.4e38 that the heads' arithmetic (logits
# of trained weights, their squares and squared norms) cannot overflow.
MAX_FEATURE = 1e6


def check_count(value: int, name: str, low: int, high: int) -> int:
    """``value`` unless it lies outside ``[low, high]``: then an InputError naming ``name``."""
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low:,} and {high:,}, got {value:,}")
    return value


def env_threads() -> int | None:
    """LORT_NUM_THREADS as a thread count (None when unset), bounded like --threads."""
    value = os.environ.get("LORT_NUM_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise InputError(f"LORT_NUM_THREADS={value!r} is not a positive integer")
    return check_count(int(value), "LORT_NUM_THREADS", 1, MAX_THREADS)
