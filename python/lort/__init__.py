"""lort: long-tailed recognition by logits retargeting (arXiv 2403.00250).

Stage 1 trains a backbone with cross-entropy and strong weight decay; stage 2
re-trains the classifier on frozen features against a soft target. The Rust
core (``lort._core``) streams logits and computes the paper's per-class
statistics; :func:`lort.analysis.analyze` is its Python face.
"""

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

__version__ = "0.1.0"

__all__ = [
    "DamagedFileError",
    "FileReadError",
    "InputError",
    "LabelError",
    "LortError",
    "NonFiniteError",
    "NpyFormatError",
    "TruncatedFileError",
    "__version__",
]
