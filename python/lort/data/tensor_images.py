"""Small images decoded once into one uint8 tensor on the training device, augmented there.

For 32-pixel datasets (CIFAR, small imagefolder sets) a stage-1 step costs far less than
decoding and transforming its batch image by image in Python, on a GPU above all. So the
split is decoded once (N x C x H x W uint8, zero-padded by the crop padding) and each batch is
cut out with one gather: the random crop and the horizontal flip are both index arithmetic,
followed by the normalisation. The augmentation is the ``small`` pipeline of
:mod:`lort.data.transforms` (RandomCrop(size, padding=4) with zero fill, then a flip with
probability 1/2).

The batch order and every random draw come from a CPU generator seeded by (seed, epoch), so a
run sees the same batches on any device, and a resumed run the same as an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from lort.data.images import read_image
from lort.data.sources import ImageFiles, Images
from lort.data.transforms import SMALL_PADDING, TransformSpec

# Above this many bytes of decoded pixels, stage 1 streams from files instead.
MAX_BYTES = 4 << 30
# Images augmented per gather (about 100 MB of float32 32x32 RGB).
CHUNK_IMAGES = 8192


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of one epoch's batch order and augmentation draws."""
    return seed * 100_003 + epoch


def decode_small(images: Images, size: int, needs: str = "") -> np.ndarray | None:
    """The images as N x size x size x 3 uint8; None for an array of another form, or images
    that would not fit in :data:`MAX_BYTES`. Files are read by
    :func:`lort.data.images.read_image`: one of another size is an InputError naming it, with
    ``needs`` saying why it must be ``size`` x ``size``."""
    n = len(images.paths) if isinstance(images, ImageFiles) else len(images)
    if n * size * size * 3 > MAX_BYTES:
        return None
    if not isinstance(images, ImageFiles):
        ok = images.dtype == np.uint8 and images.shape[1:] == (size, size, 3)
        return images if ok else None
    needs = needs or f"the images are read at {size}x{size} with no resize"

    def load(rel: str) -> np.ndarray:
        return np.asarray(read_image(images.root / rel, "RGB", size, needs))

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(load, (str(p) for p in images.paths), chunksize=256))
    return np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)


class TensorImages:
    """One split as a padded uint8 tensor on ``device`` with its labels; yields augmented,
    normalised float batches."""

    def __init__(
        self,
        pixels: np.ndarray,
        labels: np.ndarray,
        spec: TransformSpec,
        device: torch.device,
        padding: int = SMALL_PADDING,
    ) -> None:
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
        self.padded = F.pad(x.to(device), (padding,) * 4)  # zero fill, as RandomCrop's
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(device)
        self.size = spec.image_size
        self.padding = padding
        scale = torch.tensor(255.0, device=device)
        self.mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1) * scale
        self.std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1) * scale
        self.device = device

    def __len__(self) -> int:
        return int(self.labels.numel())

    def steps(self, batch_size: int, world: int = 1, drop_last: bool = False) -> int:
        """Batches per epoch on each rank (DistributedSampler's padding to a multiple of
        ``world``); the last batch is short, or dropped with ``drop_last``."""
        per_rank = -(-len(self) // world)
        return per_rank // batch_size if drop_last else -(-per_rank // batch_size)

    def epoch(
        self,
        batch_size: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled, augmented batches for ``rank`` of ``world``."""
        n = len(self)
        g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=g)
        if world > 1:  # pad by wrapping around, then take every world-th sample
            per_rank = -(-n // world)
            order = torch.cat([order, order[: per_rank * world - n]])[rank::world]
        m = order.numel()
        offsets = torch.randint(0, 2 * self.padding + 1, (m, 2), generator=g)
        flips = torch.rand(m, generator=g) < 0.5
        order, offsets, flips = (t.to(self.device) for t in (order, offsets, flips))
        end = self.steps(batch_size, world, drop_last) * batch_size
        # Cut many batches per gather: a step then costs one slice, not a dozen small ops.
        chunk = max(1, CHUNK_IMAGES // batch_size) * batch_size
        for c in range(0, end, chunk):
            ce = min(c + chunk, end)
            xs, ys = self.crop(order[c:ce], offsets[c:ce], flips[c:ce])
            for i in range(0, ce - c, batch_size):
                yield xs[i : i + batch_size], ys[i : i + batch_size]

    def in_order(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image once, in order, unaugmented (the eval transform)."""
        n = len(self)
        for i in range(0, n, batch_size):
            idx = torch.arange(i, min(i + batch_size, n), device=self.device)
            centre = torch.full((idx.numel(), 2), self.padding, device=self.device)
            yield self.crop(idx, centre, torch.zeros_like(idx, dtype=torch.bool))

    def crop(
        self, idx: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx`` cut at ``offsets`` (row, column) of the padded image, mirrored
        where ``flips``, normalised; and their labels."""
        s = self.size
        ar = torch.arange(s, device=self.device)
        rows = offsets[:, :1] + ar  # B x s
        cols = offsets[:, 1:] + torch.where(flips[:, None], s - 1 - ar, ar)
        b = idx[:, None, None, None]
        c = torch.arange(self.padded.shape[1], device=self.device)[None, :, None, None]
        x = self.padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]
        return (x.float() - self.mean) / self.std, self.labels[idx]
