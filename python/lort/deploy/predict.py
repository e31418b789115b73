"""``lort predict``: classify new inputs with a finished run's classifier.

Inputs are image files, folders of them (searched recursively, files in sorted order), or
``.npy`` arrays: N x D features of the run's backbone (the only input of a ``features`` run),
or decoded images, N x H x W x C uint8 or N x C x H x W floats in [0, 1]. Images are read as
the run's evaluation read its test split (the same decoding, transform and batch size), go
through the run's backbone, and their logits through the run's head with the method's inference
rule and the run's flip averaging (:meth:`lort.run.trained.TrainedRun.logits`), so a run's own test
images get the logits of its ``logits.npy``. A features array ``NAME_features.npy`` is averaged
with ``NAME_flipped_features.npy`` beside it when the run used flip averaging. Every input is
read, checked and classified a chunk at a time: memory grows with the results kept, not with
the inputs' size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lort.data.feature_files import check_rows
from lort.data.imagefolder import IMAGE_EXTENSIONS
from lort.data.images import ArrayImages, FileImages, Mode, array_images, check_headers, read_image
from lort.data.sources import ImageFiles
from lort.data.tensor_images import TensorImages, decode_small
from lort.data.transforms import build_transform
from lort.errors import InputError
from lort.files import NotRegularFile, load_npy, open_regular, regular_file
from lort.limits import MAX_INPUTS
from lort.run.trained import TrainedRun, open_trained
from lort.runtime import Runtime, pick_device
from lort.stage1.features import BATCH, EvalSet, extract

# Images decoded and run through the backbone at a time (rounded up to whole batches, so that
# the batches are those of one pass over all of them).
CHUNK = 4096
# Bytes of the widest float32 array of a chunk of feature rows (its features or its logits).
FEATURE_CHUNK_BYTES = 32 << 20

OnProgress = Callable[[int, int], None]
"""on_progress(inputs done, inputs in all) after every chunk."""


@dataclass
class Predictions:
    """Top-k classes of every input, in input order; the full logits when kept."""

    run: TrainedRun
    names: list[str] = field(default_factory=list)
    top_index: list[np.ndarray] = field(default_factory=list)  # chunks of N x k
    top_prob: list[np.ndarray] = field(default_factory=list)
    logits: list[np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)

    def indices(self) -> np.ndarray:
        return np.concatenate(self.top_index) if self.top_index else np.zeros((0, 0), np.int64)

    def probabilities(self) -> np.ndarray:
        return np.concatenate(self.top_prob) if self.top_prob else np.zeros((0, 0), np.float32)

    def all_logits(self) -> np.ndarray:
        if self.logits is None:
            raise InputError("the logits were not kept")
        k = self.run.num_classes
        return np.concatenate(self.logits) if self.logits else np.zeros((0, k), np.float32)

    def rows(self) -> list[tuple[str, list[tuple[str, int, float]]]]:
        """(input, [(class name, class index, probability), ...]) per input."""
        return list(self._rows())

    def _rows(self) -> Iterator[tuple[str, list[tuple[str, int, float]]]]:
        names = self.run.class_names
        for n, ix, pr in zip(self.names, self.indices(), self.probabilities(), strict=True):
            yield n, [(names[int(i)], int(i), float(p)) for i, p in zip(ix, pr, strict=True)]

    def csv(self) -> tuple[list[str], Iterable[list[Any]]]:
        """Header and rows (made as they are read): the input, then class, index and
        probability per rank."""
        k = self.indices().shape[1] if self.names else 0
        header = ["input"] + [f"{c}_{r}" for r in range(1, k + 1) for c in CSV_COLUMNS]
        return header, ([n, *(v for top in tops for v in top)] for n, tops in self._rows())

    def to_json(self) -> dict[str, Any]:
        run = self.run
        return {
            "run": str(run.root),
            "method": run.method.name,
            "inference": run.method.inference or "none",
            "flip_averaging": run.flips,
            "temperature": run.temperature,
            "notes": self.notes,
            "predictions": [
                {
                    "input": n,
                    "top": [{"class": c, "index": i, "probability": p} for c, i, p in tops],
                }
                for n, tops in self._rows()
            ],
        }


CSV_COLUMNS = ("class", "index", "probability")


def list_inputs(inputs: list[Path]) -> list[Path]:
    """Image files and .npy arrays, folders expanded (recursively, sorted)."""
    found: list[Path] = []
    for p in inputs:
        if p.is_dir():
            images = sorted(
                Path(d) / f
                for d, _, files in os.walk(p)
                for f in files
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
            )
            if not images:
                raise InputError(f"{p}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it")
            found += images
        elif not p.exists():
            raise InputError(f"{p}: no such file or folder")
        elif not p.is_file():  # a FIFO would block the read, a device never end it
            regular_file(p, "input")
        elif p.suffix.lower() == ".npy" or p.name.lower().endswith(IMAGE_EXTENSIONS):
            found.append(p)
        else:
            raise InputError(f"{p}: not an image ({', '.join(IMAGE_EXTENSIONS)}) nor a .npy")
    if not found:
        raise InputError("give at least one image, folder or .npy to classify")
    return found


def _groups(paths: list[Path]) -> Iterator[tuple[str, list[Path]]]:
    """Runs of consecutive image files, and each .npy alone, in order."""
    images: list[Path] = []
    for p in paths:
        if p.suffix.lower() == ".npy":
            if images:
                yield "images", images
                images = []
            yield "npy", [p]
        else:
            images.append(p)
    if images:
        yield "images", images


def predict(
    root: Path,
    inputs: list[Path],
    *,
    top_k: int = 5,
    batch_size: int = BATCH,
    device: str = "auto",
    workers: int = 0,
    keep_logits: bool = False,
    on_progress: OnProgress | None = None,
) -> Predictions:
    """Top-``top_k`` classes and probabilities (the softmax of the inference logits over the
    run's temperature) of every input; see the module docstring for what inputs are."""
    if top_k < 1 or batch_size < 1 or workers < 0:
        raise InputError("--top-k and --batch-size must be at least 1, --workers at least 0")
    paths = list_inputs(inputs)
    run = open_trained(root)
    reader = Reader(run, Runtime(pick_device(device)), batch_size, workers)
    preds = Predictions(run, logits=[] if keep_logits else None, notes=list(run.notes))
    k = min(top_k, run.num_classes)
    total = _count(paths)
    done = 0
    for kind, group in _groups(paths):
        parts = reader.npy(group[0], preds.notes) if kind == "npy" else reader.images(group)
        for names, (features, flipped) in parts:
            z = run.logits(torch.from_numpy(features), _tensor(flipped))
            prob, index = run.probabilities(z).topk(k, dim=1)
            preds.names += names
            preds.top_index.append(index.numpy())
            preds.top_prob.append(prob.numpy())
            if preds.logits is not None:
                preds.logits.append(z.numpy())
            done += len(names)
            if on_progress is not None:
                on_progress(done, total)
    return preds


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.from_numpy(a)


def open_npy(path: Path) -> np.ndarray:
    """A .npy input, memory-mapped; one line naming it when it is not one (empty included)."""
    try:
        return load_npy(path, mmap_mode="r")
    except NotRegularFile:
        raise
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read it as a .npy array: {e}") from None


def _count(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        if p.suffix.lower() == ".npy":
            a = open_npy(p)
            if a.ndim == 0:
                raise InputError(f"{p}: cannot read it as a .npy array of rows: it holds one value")
            n += int(a.shape[0])
        else:
            n += 1
        if n > MAX_INPUTS:
            raise InputError(
                f"{p}: {n:,} inputs so far; one predict classifies at most {MAX_INPUTS:,} "
                "(it holds every result in memory): split the inputs"
            )
    return n


def _blocks(path: Path, a: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    """The rows of ``a`` (``path``'s array, memory-mapped) ``rows`` at a time, each a new
    array. Read from the file, not through the mapping: a mapping's pages, once read, count in
    the process's memory until the kernel needs them back."""
    if not isinstance(a, np.memmap) or not a.flags.c_contiguous:  # Fortran order: by columns
        for start in range(0, len(a), rows):
            yield np.array(a[start : start + rows], order="C")
        return
    with open_regular(path) as f:
        f.seek(a.offset)
        for start in range(0, len(a), rows):
            shape = (min(rows, len(a) - start), *a.shape[1:])
            block = np.fromfile(f, a.dtype, count=(count := math.prod(shape)))
            if block.size != count:
                raise InputError(f"{path} ended before its {len(a):,} rows (cut while read?)")
            yield block.reshape(shape)


Features = tuple[np.ndarray, np.ndarray | None]
Part = tuple[list[str], Features]


@dataclass
class Reader:
    """Turns inputs into the run's features (plain and mirrored view), chunk by chunk."""

    run: TrainedRun
    rt: Runtime
    batch_size: int
    workers: int

    @property
    def chunk(self) -> int:
        return -(-CHUNK // self.batch_size) * self.batch_size

    def _backbone(self) -> torch.nn.Module:
        if self.run.backbone is None:
            raise InputError(
                f"{self.run.root} was trained on features: give a .npy of "
                f"{self.run.feature_dim}-d features, not images"
            )
        return self.run.backbone

    def _features(self, images: EvalSet) -> Features:
        return extract(
            self._backbone(),
            images,
            self.rt,
            flip=self.run.flips,
            batch_size=self.batch_size,
            workers=self.workers,
        )

    def images(self, paths: list[Path]) -> Iterator[Part]:
        """Image files in chunks, each decoded and transformed as the run's test split was;
        every header is checked (pixel bound, and the size where the run reads images at a
        fixed size) before any is decoded."""
        self._backbone()
        spec = self.run.spec
        fixed = spec.kind in ("small", "digits")
        size = spec.image_size if fixed else None
        mode: Mode = "L" if len(spec.mean) == 1 else "RGB"
        needs = f"this run's network takes {spec.image_size}x{spec.image_size} images"
        check_headers(paths, size, needs)
        for start in range(0, len(paths), self.chunk):
            chunk = paths[start : start + self.chunk]
            labels = np.zeros(len(chunk), np.int64)
            files = np.array([str(p.resolve()) for p in chunk], dtype=str)
            images: EvalSet
            if spec.kind == "small":
                pixels = decode_small(ImageFiles(Path("/"), files), spec.image_size, needs)
                assert pixels is not None  # a chunk is far below decode_small's byte bound
                images = TensorImages(pixels, labels, spec, self.rt.device)
            elif spec.kind == "digits":
                gray = np.stack(
                    [np.asarray(read_image(p, "L", spec.image_size, needs)) for p in chunk]
                )
                pixels = array_images(gray[..., None], "", "digits", 1, spec.image_size)
                images = ArrayImages(pixels, labels, build_transform(spec, False))
            else:
                transform = build_transform(spec, False)
                images = FileImages(Path("/"), files, labels, transform, mode)
            yield [str(p) for p in chunk], self._features(images)

    def npy(self, path: Path, notes: list[str]) -> Iterator[Part]:
        """The rows of a .npy array: features, or decoded images."""
        a = open_npy(path)
        if a.ndim == 2:
            yield from self._feature_rows(path, a, notes)
        elif a.ndim == 4:
            yield from self._array_images(path, a)
        else:
            raise InputError(
                f"{path} has shape {a.shape}: give N x {self.run.feature_dim} features, or "
                "images as N x H x W x C uint8 or N x C x H x W floats"
            )

    def _check(self, path: Path, a: np.ndarray) -> None:
        if a.ndim != 2 or a.dtype.kind != "f" or a.shape[1] != self.run.feature_dim:
            shape = " x ".join(map(str, a.shape)) if a.ndim else "a single value of"
            raise InputError(
                f"{path} holds {shape} {a.dtype}; the run's head reads "
                f"{self.run.feature_dim}-d float features (N x {self.run.feature_dim})"
            )

    def _feature_rows(self, path: Path, a: np.ndarray, notes: list[str]) -> Iterator[Part]:
        """N x D features (and their mirror beside them), read, checked and converted to
        float32 a chunk of rows at a time."""
        self._check(path, a)
        views = [(path, a)]
        if self.run.flips:
            stem = path.name.removesuffix("_features.npy")
            mirror = path.with_name(stem + "_flipped_features.npy")
            if path.name.endswith("_features.npy") and mirror.is_file():
                m = open_npy(mirror)
                self._check(mirror, m)
                if m.shape != a.shape:
                    raise InputError(f"{mirror} has shape {m.shape}, {path} {a.shape}")
                views.append((mirror, m))
            else:
                notes.append(
                    f"the run averages each input with its mirror image; {path} has no "
                    f"{mirror.name} beside it, so its rows use the plain view only"
                )
        widest = max(a.shape[1], self.run.num_classes) * 4
        rows = max(1, FEATURE_CHUNK_BYTES // widest)
        blocks = zip(*(_blocks(p, v, rows) for p, v in views), strict=True)
        for start, chunk in zip(range(0, len(a), rows), blocks, strict=True):
            for (p, _), block in zip(views, chunk, strict=True):
                check_rows(block, str(p), first=start)
            features, *flipped = (b.astype(np.float32, copy=False) for b in chunk)
            names = [f"{path}[{i}]" for i in range(start, start + len(features))]
            yield names, (features, flipped[0] if flipped else None)

    def _array_images(self, path: Path, a: np.ndarray) -> Iterator[Part]:
        """Decoded images, read as image files of the same pixels are (see
        :func:`lort.data.images.array_images`)."""
        self._backbone()
        spec = self.run.spec
        channels = len(spec.mean)
        array_images(a[:0], str(path), spec.kind, channels, spec.image_size)  # its form
        blocks = _blocks(path, a, self.chunk)
        for start, rows in zip(range(0, len(a), self.chunk), blocks, strict=True):
            chunk = array_images(rows, str(path), spec.kind, channels, spec.image_size)
            labels = np.zeros(len(chunk), np.int64)
            images: EvalSet = (
                TensorImages(chunk, labels, spec, self.rt.device)
                if spec.kind == "small"
                else ArrayImages(chunk, labels, build_transform(spec, False))
            )
            yield [f"{path}[{i}]" for i in range(start, start + len(chunk))], self._features(images)
