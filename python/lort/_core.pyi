"""Typed stubs for the Rust extension ``lort._core``.

Use :mod:`lort.analysis` for a friendlier face; this module is the raw core.
"""

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any, Literal, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ECE_BINS",
    "EXACT_MAX_CLASSES",
    "FEW_BELOW",
    "GROUP_NAMES",
    "MANY_ABOVE",
    "MAX_CLASSES",
    "LogitStats",
    "analyze_npy",
    "curvature",
    "curvature_npy",
    "exact_memory_bytes",
    "lanczos_memory_bytes",
    "npy_header",
]

# Type-only aliases (private: the extension has no such names at runtime).
_HessianMode = Literal["bound", "exact", "none"]
_NanPolicy = Literal["raise", "omit"]

ECE_BINS: int
EXACT_MAX_CLASSES: int
GROUP_NAMES: list[str]
MANY_ABOVE: int
FEW_BELOW: int
# The most classes the core keeps state for (2**24): LogitStats(num_classes), a .npy header's
# columns and the curvature's K are refused above it (InputError / NpyFormatError), before
# anything is allocated. See docs/core.md.
MAX_CLASSES: int

@final
class LogitStats:
    """Streaming per-class statistics of logits; merge shards exactly; picklable.

    ``threads`` (default: LORT_NUM_THREADS, else every core) serves every pass
    and ``finalize``'s eigen-analysis (hessian='exact'); none holds the GIL.
    """

    def __new__(
        cls,
        num_classes: int,
        *,
        hessian: _HessianMode = "bound",
        nan_policy: _NanPolicy = "raise",
        threads: int | None = None,
    ) -> LogitStats: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def rows(self) -> int: ...
    @property
    def omitted_rows(self) -> int: ...
    @property
    def hessian(self) -> _HessianMode: ...
    @property
    def nan_policy(self) -> _NanPolicy: ...
    def update(
        self,
        logits: npt.NDArray[np.float16] | npt.NDArray[np.float32] | npt.NDArray[np.float64],
        labels: npt.NDArray[np.integer[Any]],
        *,
        progress: Callable[[int], object] | None = None,
    ) -> None: ...
    def update_npy(
        self,
        path: str | PathLike[str],
        labels: npt.NDArray[np.integer[Any]],
        *,
        progress: Callable[[int], object] | None = None,
    ) -> None: ...
    def merge(self, other: LogitStats) -> None: ...
    def copy(self) -> LogitStats: ...
    def finalize(self, train_counts: npt.NDArray[np.int64] | None = None) -> dict[str, Any]: ...

def analyze_npy(
    path: str | PathLike[str],
    labels: npt.NDArray[np.integer[Any]],
    *,
    hessian: _HessianMode = "bound",
    nan_policy: _NanPolicy = "raise",
    threads: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> LogitStats: ...
def npy_header(path: str | PathLike[str]) -> tuple[str, int, int]: ...
def curvature(
    logits: npt.NDArray[np.float16] | npt.NDArray[np.float32] | npt.NDArray[np.float64],
    *,
    method: Literal["exact", "lanczos"] = "lanczos",
    nan_policy: _NanPolicy = "raise",
    threads: int | None = None,
    tol: float = 1e-5,
    max_basis: int = 400,
    block: int = 2,
) -> dict[str, Any]: ...
def curvature_npy(
    paths: Sequence[str | PathLike[str]],
    *,
    nan_policy: _NanPolicy = "raise",
    threads: int | None = None,
    tol: float = 1e-5,
    max_basis: int = 400,
    block: int = 2,
    progress: Callable[[int], object] | None = None,
) -> dict[str, Any]: ...
def exact_memory_bytes(num_classes: int) -> int: ...
def lanczos_memory_bytes(
    num_classes: int, *, threads: int | None = None, max_basis: int = 400, block: int = 2
) -> int: ...
