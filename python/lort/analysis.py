"""The Python face of ``lort._core``: input coercion, shards, results as dataclasses.

The metrics are the paper's (arXiv 2403.00250, Section 4):

- Logits Magnitude ``L_i = mean(z[y == i, i]) - mean(z[y != i, i])``;
- Regularized Standard Deviation ``r_i = sigma_i / L_i`` with ``sigma_i`` the
  population standard deviation (ddof=0) of ``z[y == i, i]`` (the positive rows).
  ``rstd_neg`` and ``rstd_all`` use the negative rows and the whole column instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lort import _core, limits
from lort.checks import check_counts
from lort.errors import FileReadError, InputError, LabelError
from lort.files import NotRegularFile, finite_or_none, jsonable, load_npy, regular_file

HessianMode = Literal["bound", "exact", "none"]
NanPolicy = Literal["raise", "omit"]
CurvatureMode = Literal["auto", "lanczos", "none"]
CurvatureMethod = Literal["auto", "exact", "lanczos"]
# curvature(method="auto") builds the K x K matrix up to this K (67 MB), Lanczos above.
AUTO_EXACT_MAX_CLASSES = 2048
PathLikeStr = str | os.PathLike[str]
# The many / medium / few rule is the core's; these are its values.
GROUP_NAMES: tuple[str, ...] = tuple(_core.GROUP_NAMES)
MANY_ABOVE: int = _core.MANY_ABOVE
FEW_BELOW: int = _core.FEW_BELOW
# The equal-width confidence bins of the core's expected calibration error.
ECE_BINS: int = _core.ECE_BINS
# The largest K the exact Hessian eigendecomposition takes (16 K^2 bytes).
EXACT_MAX_CLASSES: int = _core.EXACT_MAX_CLASSES
GROUP_RULE = (
    f"many (> {MANY_ABOVE} training images), medium ({FEW_BELOW}..{MANY_ABOVE}) "
    f"and few (< {FEW_BELOW}) classes"
)

_FLOATS = (np.float16, np.float32, np.float64)


def coerce_logits(logits: npt.ArrayLike) -> np.ndarray:
    """A C-contiguous, native-order float16/32/64 2-D array, or a clear error."""
    arr = np.asarray(logits)
    if arr.dtype.type not in _FLOATS:
        raise InputError(
            f"logits must be float16, float32 or float64, got {arr.dtype}; "
            "convert with logits.astype(np.float32)"
        )
    if arr.ndim != 2:
        raise InputError(f"logits must be 2-D (rows x classes), got shape {arr.shape}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def coerce_labels(labels: npt.ArrayLike) -> np.ndarray:
    """A contiguous, native-order 1-D integer array, or a clear error."""
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise LabelError(f"labels must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise LabelError(f"labels must be 1-D, got shape {arr.shape}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def load_array(path: PathLikeStr, what: str) -> np.ndarray:
    """A .npy file of labels or counts, mapped (a header that claims billions of rows costs
    no memory: the row count is checked against the logits' first), with lort's errors."""
    p = regular_file(path, what)
    try:
        return load_npy(p, mmap_mode="r")
    except FileNotFoundError:
        raise FileReadError(f"{what} file {p} does not exist") from None
    except NotRegularFile:
        raise
    except (OSError, ValueError) as e:
        raise InputError(f"{what} file {p} is not a readable .npy array: {e}") from None


def counts_from_labels(train_labels: npt.ArrayLike, num_classes: int) -> np.ndarray:
    """Training images per class from the training labels."""
    lab = coerce_labels(train_labels)
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise LabelError(
            f"train labels must lie in [0, {num_classes}), found {lab.min()}..{lab.max()}"
        )
    return np.bincount(lab, minlength=num_classes).astype(np.int64)


@dataclass(frozen=True)
class Group:
    """The classes of one shot group (:data:`GROUP_RULE`), or all of them."""

    classes: int
    accuracy: float | None
    mean_magnitude: float | None
    mean_rstd: float | None


@dataclass(frozen=True)
class Curvature:
    """The bias Hessian on the subspace orthogonal to the ones vector (H 1 = 0).

    ``lambda_2`` is its smallest eigenvalue there (the flattest direction in which
    the biases can move), ``lambda_max`` the largest, ``condition`` their ratio
    (infinite when lambda_2 <= 0). ``method`` is "exact" (eigenvalues of the K x K
    matrix) or "lanczos" (block Lanczos on products H v, ``passes`` of them over
    the logits; its lambda_2 is an upper and its lambda_max a lower estimate, both
    within an estimated 1e-5 relative when ``converged``). ``rows``: the rows used.
    """

    method: str
    lambda_2: float
    lambda_max: float
    condition: float
    passes: int
    converged: bool
    rows: int


@dataclass(frozen=True)
class HessianCheck:
    """Proposition 1: lambda_min of the bias Hessian (a bound or the exact value),
    and its curvature on the subspace orthogonal to the ones vector."""

    mode: str
    lambda_min: float
    scale: float
    tolerance: float
    psd: bool
    curvature: Curvature | None = None

    @classmethod
    def from_core(cls, d: dict[str, Any]) -> HessianCheck:
        c = d.get("curvature")
        return cls(**{**d, "curvature": None if c is None else Curvature(**c)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: an infinite condition number becomes None."""
        out = asdict(self)
        if out["curvature"] is not None:
            out["curvature"] = {
                k: finite_or_none(v) if isinstance(v, float) else v
                for k, v in out["curvature"].items()
            }
        return out


@dataclass(frozen=True)
class Analysis:
    """Everything ``finalize`` reports, with per-class arrays as numpy arrays."""

    num_classes: int
    rows: int
    omitted_rows: int
    accuracy: float | None
    balanced_accuracy: float | None
    nll: float | None
    ece: float | None
    per_class: dict[str, np.ndarray]
    groups: dict[str, Group | None] | None
    hessian: HessianCheck | None
    ece_bins: dict[str, np.ndarray] = field(repr=False)

    @classmethod
    def from_core(cls, d: dict[str, Any]) -> Analysis:
        groups = d["groups"]
        hess = d["hessian"]
        o = d["overall"]
        return cls(
            num_classes=d["num_classes"],
            rows=o["rows"],
            omitted_rows=o["omitted_rows"],
            accuracy=o["accuracy"],
            balanced_accuracy=o["balanced_accuracy"],
            nll=o["nll"],
            ece=o["ece"],
            per_class=d["per_class"],
            groups=None
            if groups is None
            else {k: None if g is None else Group(**g) for k, g in groups.items()},
            hessian=None if hess is None else HessianCheck.from_core(hess),
            ece_bins=d["ece_bins"],
        )

    def overall_group(self) -> Group:
        """The all-classes row of the summary table."""
        pc = self.per_class
        return Group(
            classes=self.num_classes,
            accuracy=self.accuracy,
            mean_magnitude=finite_mean(pc["magnitude"]),
            mean_rstd=finite_mean(pc["rstd"]),
        )

    def group_accuracies(self) -> dict[str, float | None]:
        """Top-1 accuracy of all rows, then the class-mean accuracy of each shot group."""
        groups = self.groups or {}
        return {"all": self.accuracy} | {
            name: (None if g is None else g.accuracy) for name, g in groups.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays become lists, NaN becomes None."""
        return {
            "num_classes": self.num_classes,
            "rows": self.rows,
            "omitted_rows": self.omitted_rows,
            "overall": {
                "accuracy": self.accuracy,
                "balanced_accuracy": self.balanced_accuracy,
                "nll": self.nll,
                "ece": self.ece,
                "mean_magnitude": self.overall_group().mean_magnitude,
                "mean_rstd": self.overall_group().mean_rstd,
            },
            "groups": None
            if self.groups is None
            else {k: None if g is None else g.__dict__ for k, g in self.groups.items()},
            "hessian": None if self.hessian is None else self.hessian.to_dict(),
            "per_class": {k: jsonable(v) for k, v in self.per_class.items()},
            "ece_bins": {k: jsonable(v) for k, v in self.ece_bins.items()},
            "definitions": {
                "magnitude": "mean of z[:, i] over rows labelled i minus mean over other rows",
                "rstd": "population std (ddof=0) of z[:, i] over rows labelled i, divided by L_i",
                "rstd_neg": "std over rows not labelled i, divided by L_i",
                "rstd_all": "std of the whole column, divided by L_i",
                "groups": f"many > {MANY_ABOVE} training images, medium "
                f"{FEW_BELOW}..{MANY_ABOVE}, few < {FEW_BELOW}",
                "ece": "15 equal-width bins over top-1 confidence, bin b = (b/15, (b+1)/15]",
                "hessian": "H = mean_n(diag(s_n) - s_n s_n^T), s_n = softmax(z_n), the Hessian "
                "of the mean cross-entropy in the classifier bias; H 1 = 0, so lambda_min is 0",
                "curvature": "lambda_2 and lambda_max: smallest and largest eigenvalue of H on "
                "the subspace orthogonal to the ones vector; condition = lambda_max / lambda_2",
            },
        }


def finite_mean(a: np.ndarray) -> float | None:
    """Mean of the finite values; None when there are none."""
    finite = a[np.isfinite(a)]
    return float(finite.mean()) if finite.size else None


def shot_groups(train_counts: np.ndarray) -> dict[str, np.ndarray]:
    """Class indices of the many, medium and few groups (:data:`GROUP_NAMES`)."""
    c = np.asarray(train_counts)
    return {
        "many": np.flatnonzero(c > MANY_ABOVE),
        "medium": np.flatnonzero((c >= FEW_BELOW) & (c <= MANY_ABOVE)),
        "few": np.flatnonzero(c < FEW_BELOW),
    }


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB"


def check_memory(what: str, needed: int, max_memory: int | None, hint: str) -> None:
    """InputError when ``needed`` bytes exceed the ``max_memory`` budget."""
    if max_memory is not None and needed > max_memory:
        raise InputError(
            f"{what} needs {_gb(needed)} but the memory budget is {_gb(max_memory)}; {hint}"
        )


def new_stats(
    num_classes: int,
    *,
    hessian: HessianMode = "bound",
    nan_policy: NanPolicy = "raise",
    threads: int | None = None,
    max_memory: int | None = None,
) -> _core.LogitStats:
    """A ``LogitStats``; hessian='exact' is refused when its two K x K float64
    matrices (:func:`lort._core.exact_memory_bytes`) exceed ``max_memory`` bytes."""
    threads = limits.threads(threads)
    if hessian == "exact":
        check_memory(
            f"hessian='exact' at K = {num_classes:,}",
            _core.exact_memory_bytes(num_classes),
            max_memory,
            "raise the budget or use hessian='bound' (its Lanczos curvature needs no K x K matrix)",
        )
    return _core.LogitStats(num_classes, hessian=hessian, nan_policy=nan_policy, threads=threads)


def curvature(
    logits: npt.ArrayLike,
    *,
    method: CurvatureMethod = "auto",
    nan_policy: NanPolicy = "raise",
    threads: int | None = None,
    max_memory: int | None = None,
) -> Curvature:
    """lambda_2, lambda_max and their ratio for the bias Hessian of in-memory logits.

    The Hessian of the mean softmax cross-entropy in the classifier bias is
    ``H = mean_n(diag(s_n) - s_n s_n^T)``; ``H 1 = 0``, so its curvature is read on
    the subspace orthogonal to the ones vector. ``method="exact"`` decomposes the
    K x K matrix (16 K^2 bytes); ``"lanczos"`` estimates both ends from products
    ``H v`` over the rows (no K x K matrix); ``"auto"`` is exact up to
    K = 2,048 and Lanczos above. Labels are not needed: H depends on the logits only.
    """
    threads = limits.threads(threads)
    arr = coerce_logits(logits)
    k = arr.shape[1]
    if k < 2:
        raise InputError(f"the curvature needs at least 2 classes (got {k})")
    if method == "auto":
        method = "exact" if k <= AUTO_EXACT_MAX_CLASSES else "lanczos"
    if method == "exact":
        check_memory(
            f"the exact curvature at K = {k:,}",
            _core.exact_memory_bytes(k),
            max_memory,
            "raise the budget or use method='lanczos'",
        )
    elif method == "lanczos":
        check_memory(
            f"the Lanczos curvature at K = {k:,}",
            _core.lanczos_memory_bytes(k, threads=threads),
            max_memory,
            "raise the budget",
        )
    return Curvature(**_core.curvature(arr, method=method, nan_policy=nan_policy, threads=threads))


def analyze(
    logits: PathLikeStr | Sequence[PathLikeStr] | npt.ArrayLike,
    labels: PathLikeStr | npt.ArrayLike,
    *,
    train_counts: PathLikeStr | npt.ArrayLike | None = None,
    train_labels: PathLikeStr | npt.ArrayLike | None = None,
    hessian: HessianMode = "bound",
    nan_policy: NanPolicy = "raise",
    threads: int | None = None,
    progress: Callable[[int], object] | None = None,
    curvature: CurvatureMode = "auto",
    max_memory: int | None = None,
) -> Analysis:
    """Analyze logits held in memory or streamed from .npy files.

    Several files are row shards of one set: ``labels`` covers all their rows,
    in order. Either ``train_counts`` or ``train_labels`` adds the many / medium /
    few groups. ``progress`` is called with the number of rows done so far.

    ``curvature`` (lambda_2 and lambda_max of the bias Hessian on the subspace
    orthogonal to the ones vector, in ``result.hessian.curvature``): ``"auto"``
    takes the exact values with hessian='exact' and a Lanczos estimate (further
    streaming passes over the logits, no K x K matrix) with hessian='bound' for logits of
    at most :data:`AUTO_LANCZOS_MAX_VALUES` values;
    ``"lanczos"`` always runs the estimate; ``"none"`` skips it. ``max_memory``
    (bytes) refuses a hessian='exact' or Lanczos run whose memory would exceed it.
    """
    threads = limits.threads(threads)
    lab = coerce_labels(_maybe_load(labels, "labels"))
    if isinstance(logits, (str, os.PathLike)):
        logits = [logits]
    if _is_path_list(logits):
        paths = [regular_file(p, "logits") for p in logits]  # type: ignore[union-attr]
        if not paths:
            raise InputError("no logits files given")
        headers = [_core.npy_header(p) for p in paths]
        widths = {h[2] for h in headers}
        if len(widths) != 1:
            raise InputError(
                "logits shards must have the same number of classes, got "
                + ", ".join(f"{p} ({h[2]})" for p, h in zip(paths, headers, strict=True))
            )
        total = sum(h[1] for h in headers)
        if total != lab.shape[0]:
            raise LabelError(
                f"the logits files hold {total} rows but {lab.shape[0]} labels were given; "
                "pass one label per row, shards in order"
            )
        k = headers[0][2]
        lanczos = _wants_lanczos(curvature, hessian, total, k, threads, max_memory)
        stats = new_stats(
            k, hessian=hessian, nan_policy=nan_policy, threads=threads, max_memory=max_memory
        )
        start = 0
        for p, (_, rows, _) in zip(paths, headers, strict=True):
            offset = start
            cb = None if progress is None else (lambda n, o=offset: progress(o + n))
            stats.update_npy(p, lab[start : start + rows], progress=cb)
            start += rows
        curv = (
            _core.curvature_npy(paths, nan_policy=nan_policy, threads=threads)
            if lanczos and stats.rows
            else None
        )
    else:
        arr = coerce_logits(logits)
        k = arr.shape[1]
        lanczos = _wants_lanczos(curvature, hessian, arr.shape[0], k, threads, max_memory)
        stats = new_stats(
            k, hessian=hessian, nan_policy=nan_policy, threads=threads, max_memory=max_memory
        )
        stats.update(arr, lab, progress=progress)
        curv = (
            _core.curvature(arr, method="lanczos", nan_policy=nan_policy, threads=threads)
            if lanczos and stats.rows
            else None
        )
    result = summarize(stats, train_counts=train_counts, train_labels=train_labels)
    if curvature == "none" and result.hessian is not None:
        result = replace(result, hessian=replace(result.hessian, curvature=None))
    elif curv is not None and result.hessian is not None:
        result = replace(result, hessian=replace(result.hessian, curvature=Curvature(**curv)))
    return result


# curvature="auto" runs the Lanczos estimate (tens of further passes over the logits) only
# for logits up to this many values (200 MB of float32), where those passes take seconds.
AUTO_LANCZOS_MAX_VALUES = 50_000_000


def _wants_lanczos(
    curvature: CurvatureMode,
    hessian: HessianMode,
    rows: int,
    k: int,
    threads: int | None,
    budget: int | None,
) -> bool:
    """Whether analyze() runs the Lanczos estimate; checks its memory first."""
    if curvature not in ("auto", "lanczos", "none"):
        raise InputError(f"curvature={curvature!r} is not a mode; use 'auto', 'lanczos' or 'none'")
    auto = hessian == "bound" and rows * k <= AUTO_LANCZOS_MAX_VALUES
    want = (
        k >= 2 and hessian != "none" and (curvature == "lanczos" or (curvature == "auto" and auto))
    )
    if want:
        check_memory(
            f"the Lanczos curvature at K = {k:,}",
            _core.lanczos_memory_bytes(k, threads=threads),
            budget,
            "raise the budget or pass curvature='none'",
        )
    return want


def summarize(
    stats: _core.LogitStats,
    *,
    train_counts: PathLikeStr | npt.ArrayLike | None = None,
    train_labels: PathLikeStr | npt.ArrayLike | None = None,
) -> Analysis:
    """Finalize an accumulator, with groups when training counts are known."""
    if train_counts is not None and train_labels is not None:
        raise InputError("give train_counts or train_labels, not both")
    k = stats.num_classes
    counts = None
    if train_counts is not None:
        counts = check_counts(_maybe_load(train_counts, "train counts"), k)
    elif train_labels is not None:
        counts = counts_from_labels(_maybe_load(train_labels, "train labels"), k)
    return Analysis.from_core(stats.finalize(counts))


def _maybe_load(x: PathLikeStr | npt.ArrayLike, what: str) -> npt.ArrayLike:
    return load_array(x, what) if isinstance(x, (str, os.PathLike)) else x


def _is_path_list(x: object) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in x)


def npy_rows(paths: Sequence[PathLikeStr]) -> int:
    """Rows of the .npy files together, read from their headers."""
    return sum(_core.npy_header(regular_file(p, "logits"))[1] for p in paths)
