"""The one image decoder, and torch ``Dataset`` views of one split: images held in memory or
read from files.

Every image file lort reads (training, the feature cache, evaluation, ``lort predict``) goes
through :func:`open_image` and :func:`read_image`: the header is read first and the pixel count
bounded by :data:`lort.limits.MAX_IMAGE_PIXELS` (PIL's decompression-bomb refusal included), so
a file that claims 30000 x 30000 pixels is one line naming it, never a decode; where the run
reads images at a fixed size with no resize, the size is checked there too. Modes are
converted faithfully to the 8-bit L or RGB the run reads: 16-bit (and 16-bit-valued 32-bit)
grayscale is scaled by 255/65535, not clipped at 255; CMYK, palette (with its transparency),
LA, RGBA and the rest go through PIL's conversions, alpha dropped. :func:`check_headers` reads
the headers of a whole split, cheaply, before anything is trained or written.

The datasets are safe to pickle and to fork into DataLoader workers: they hold NumPy arrays (no
Python lists of strings, whose reference counts would copy pages after a fork) and open each
image file only inside ``__getitem__``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lort.errors import FileReadError, InputError
from lort.limits import MAX_IMAGE_PIXELS

Mode = Literal["RGB", "L"]
# Modes holding 16-bit grayscale (PIL opens 16-bit PNGs as I;16, some as 32-bit I).
SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# Modes PIL converts with the alpha premultiplied or that need RGBA first.
VIA_RGBA = frozenset({"La", "RGBa", "PA"})
# What a failed decode raises inside PIL (a truncated or corrupt file).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError)


def unreadable(path: Path, why: object) -> FileReadError:
    return FileReadError(f"cannot read image {path}: {why}; replace or remove the file")


def open_image(path: Path, size: int | None = None, needs: str = "") -> Image.Image:
    """``path`` opened lazily (its header read, no pixels decoded): an InputError naming it
    when it holds more than :data:`MAX_IMAGE_PIXELS` pixels, a mode lort cannot read, or (with
    ``size``) is not ``size`` x ``size``, ``needs`` saying why; a FileReadError when it is no
    image. Close it (``with``)."""
    try:
        image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{path} holds more than {MAX_IMAGE_PIXELS:,} pixels (PIL refuses it as a possible "
            "decompression bomb); shrink it or remove it"
        ) from None
    except DECODE_ERRORS as exc:
        raise unreadable(path, exc) from None
    try:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise InputError(
                f"{path} is {width}x{height} = {width * height:,} pixels, more than lort decodes "
                f"({MAX_IMAGE_PIXELS:,}); shrink it or remove it"
            )
        if image.mode == "F":
            raise InputError(
                f"{path} holds 32-bit float pixels, which have no fixed range; save it as an "
                "8- or 16-bit image"
            )
        if size is not None and (width, height) != (size, size):
            raise InputError(f"{path} is {width}x{height}; {needs}: resize it or remove it")
    except BaseException:
        image.close()
        raise
    return image


def to_mode(image: Image.Image, mode: Mode) -> Image.Image:
    """``image`` as 8-bit ``mode``, a new (decoded) image: 16-bit grayscale scaled
    (65535 -> 255), not clipped."""
    if image.mode in SIXTEEN_BIT:
        a = np.asarray(image).astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError("its 32-bit integer pixels exceed the 16-bit range")
        image = Image.fromarray(np.rint(a / 257.0).astype(np.uint8))  # mode L
    elif image.mode in VIA_RGBA or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    return image.convert(mode)  # a copy where the mode is already ``mode``


def read_image(
    path: Path, mode: Mode = "RGB", size: int | None = None, needs: str = ""
) -> Image.Image:
    """An image file decoded as 8-bit ``mode``, bounded and checked as :func:`open_image`
    does; FileReadError naming it when it does not decode."""
    with open_image(path, size, needs) as image:
        try:
            return to_mode(image, mode)
        except DECODE_ERRORS as exc:
            raise unreadable(path, exc) from None


def read_rgb(path: Path) -> Image.Image:
    """An image file decoded as RGB (see :func:`read_image`)."""
    return read_image(path, "RGB")


def check_headers(paths: Sequence[Path], size: int | None = None, needs: str = "") -> None:
    """:func:`open_image` on every path (headers only, in threads): the first bad one in
    order raises. PIL's decompression-bomb warning counts as an error meanwhile."""

    def check(path: Path) -> None:
        with open_image(path, size, needs):
            pass

    if not paths:
        return
    with warnings.catch_warnings():  # the filter is process-wide: the threads see it
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
            for _ in pool.map(check, paths, chunksize=256):
                pass


def array_images(a: np.ndarray, where: str, kind: str, channels: int, size: int) -> np.ndarray:
    """Images given as an array, N x H x W x C uint8 or N x C x H x W floats in [0, 1] (C 1
    or 3), as the run's image files decode: N x 1 x size x size floats in [0, 1] for the
    ``digits`` pipeline (uint8 divided by 255, as a grayscale file), else N x H x W x
    ``channels`` uint8 (floats rounded to 8 bits, as files hold them; a colour image's L is
    PIL's). The ``small`` and ``digits`` pipelines read ``size`` x ``size`` images with no
    resize. One InputError naming ``where`` otherwise."""
    uint8_hwc = a.dtype == np.uint8 and a.ndim == 4 and a.shape[3] in (1, 3)
    float_chw = a.dtype.kind == "f" and a.ndim == 4 and a.shape[1] in (1, 3)
    if not (uint8_hwc or float_chw):
        raise InputError(
            f"{where}: images must be N x H x W x C uint8 or N x C x H x W floats in [0, 1] "
            f"(C 1 or 3), got {' x '.join(map(str, a.shape))} {a.dtype}"
        )
    hw = a.shape[1:3] if uint8_hwc else a.shape[2:4]
    if kind in ("small", "digits") and hw != (size, size):
        raise InputError(
            f"{where} holds {hw[0]}x{hw[1]} images; this run's network takes {size}x{size} "
            "images: resize them first"
        )
    if float_chw:
        finite = np.isfinite(a).all()
        if not finite or (a.size and (a.min() < 0.0 or a.max() > 1.0)):
            raise InputError(f"{where}: float images must hold values in [0, 1]")
        if kind == "digits" and a.shape[1] == 1:
            return np.ascontiguousarray(a, dtype=np.float32)
        a = np.rint(np.moveaxis(a, 1, 3) * 255.0).astype(np.uint8)
    if a.shape[3] != channels:
        mode: Mode = "RGB" if channels == 3 else "L"
        planes = [np.asarray(Image.fromarray(_plane(x)).convert(mode)) for x in a]
        shape = (*a.shape[:3], channels)
        a = np.stack(planes).reshape(shape) if planes else np.zeros(shape, np.uint8)
    if kind == "digits":
        return np.ascontiguousarray(np.moveaxis(a, 3, 1), dtype=np.float32) / np.float32(255)
    return np.ascontiguousarray(a)


def _plane(x: np.ndarray) -> np.ndarray:
    """One H x W x C uint8 image as PIL takes it (H x W for one channel)."""
    return x[..., 0] if x.shape[-1] == 1 else x


class ArrayImages(Dataset):
    """Images from an array: N x H x W x C uint8 (decoded as PIL) or N x C x H x W float32."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Any], torch.Tensor]
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        decoded = (
            Image.fromarray(_plane(image)) if image.dtype == np.uint8 else torch.from_numpy(image)
        )
        return self.transform(decoded), int(self.labels[index])


class FileImages(Dataset):
    """Images read with :func:`read_image` (as ``mode``) from paths relative to ``root``."""

    def __init__(
        self,
        root: Path,
        paths: np.ndarray,
        labels: np.ndarray,
        transform: Callable[[Any], torch.Tensor],
        mode: Mode = "RGB",
    ) -> None:
        self.root = root
        self.paths = paths
        self.labels = labels
        self.transform = transform
        self.mode: Mode = mode

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.root / str(self.paths[index]), self.mode)
        return self.transform(image), int(self.labels[index])
