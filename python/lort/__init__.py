"""lort: long-tailed recognition by logits retargeting (arXiv 2403.00250).

Stage 1 trains a backbone with cross-entropy and strong weight decay; stage 2
re-trains the classifier on frozen features against a soft target. The Rust
core (``lort._core``) streams logits and computes the paper's per-class
statistics.

The public API (docs/api.md) is loaded on first use, so ``import lort`` stays fast and needs
neither torch nor the compiled core until a name that needs them is touched:
:func:`fit`, :func:`open_run`, :func:`compare` and :class:`Run` (:mod:`lort.api`),
:func:`analyze` and :func:`curvature` (:mod:`lort.analysis`), and :class:`LortClassifier`
(:mod:`lort.estimator`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lort.errors import (
    DamagedFileError,
    FileReadError,
    InputError,
    LabelError,
    LortError,
    NonFiniteError,
    NpyFormatError,
    TruncatedFileError,
)

if TYPE_CHECKING:
    from lort.analysis import Analysis, analyze, curvature
    from lort.api import Run, Table, compare, fit, open_run
    from lort.estimator import LortClassifier

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY = {
    "Analysis": "lort.analysis",
    "analyze": "lort.analysis",
    "curvature": "lort.analysis",
    "Run": "lort.api",
    "Table": "lort.api",
    "compare": "lort.api",
    "fit": "lort.api",
    "open_run": "lort.api",
    "LortClassifier": "lort.estimator",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lort' has no attribute {name!r}")


__all__ = [
    "Analysis",
    "DamagedFileError",
    "FileReadError",
    "InputError",
    "LabelError",
    "LortClassifier",
    "LortError",
    "NonFiniteError",
    "NpyFormatError",
    "Run",
    "Table",
    "TruncatedFileError",
    "__version__",
    "analyze",
    "compare",
    "curvature",
    "fit",
    "open_run",
]
