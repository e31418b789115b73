"""Extract frozen-backbone features, batch by batch into arrays the caller provides (in
memory, or the run folder's mapped cache files: ``lort.run.feature_cache``), so that any
number of stage-2 re-trainings reuse them. Each split has the plain view and, where flips are
used, the horizontally flipped view."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lort.data.tensor_images import TensorImages
from lort.runtime import Runtime
from lort.stage1.loop import autocast

EvalSet = Dataset | TensorImages
# Images per forward pass of the feature cache (``lort predict`` uses the same by default: the
# same batches give the same floats).
BATCH = 256
# The keys a cache may hold (split, and split with its mirrored view).
KEYS = ("train", "train_flip", "val", "val_flip", "test", "test_flip")

# Two arrays to fill for one split: the plain view and the mirrored one (or None).
Views = tuple[np.ndarray, np.ndarray | None]
Alloc = Callable[[int], Views]


def key(split: str, flipped: bool = False) -> str:
    return f"{split}_flip" if flipped else split


@torch.no_grad()
def extract_into(
    backbone: nn.Module,
    dataset: EvalSet,
    rt: Runtime,
    *,
    flip: bool,
    alloc: Alloc,
    batch_size: int,
    workers: int,
) -> Views:
    """Features of every sample in order (eval mode), and of its mirror image, written batch
    by batch into the arrays ``alloc(feature dim)`` gives once the first batch tells the dim."""
    backbone.eval().to(rt.device)
    batches = (
        dataset.in_order(batch_size)
        if isinstance(dataset, TensorImages)
        else DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    )
    out: Views | None = None
    at = 0
    for x, _ in batches:
        x = x.to(rt.device)
        with autocast(rt.device):
            a = backbone(x).float().cpu().numpy()
            b = backbone(torch.flip(x, dims=[3])).float().cpu().numpy() if flip else None
        if out is None:
            out = alloc(a.shape[1])
        out[0][at : at + len(a)] = a
        if b is not None and out[1] is not None:
            out[1][at : at + len(b)] = b
        at += len(a)
    return alloc(getattr(backbone, "feature_dim", None) or 0) if out is None else out


def _in_memory(n: int, flip: bool) -> Alloc:
    def alloc(dim: int) -> Views:
        return np.empty((n, dim), np.float32), np.empty((n, dim), np.float32) if flip else None

    return alloc


def extract(
    backbone: nn.Module,
    dataset: EvalSet,
    rt: Runtime,
    *,
    flip: bool,
    batch_size: int = BATCH,
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features of every sample in order (eval mode), and of its mirror image (float32)."""
    return extract_into(
        backbone,
        dataset,
        rt,
        flip=flip,
        alloc=_in_memory(len(dataset), flip),  # type: ignore[arg-type]
        batch_size=batch_size,
        workers=workers,
    )


@dataclass
class FeatureCache:
    """Features per split (N x D arrays: mapped from the run's files where it has them;
    ``None`` where a split or view is absent)."""

    arrays: dict[str, np.ndarray]

    def get(self, split: str, flipped: bool = False) -> np.ndarray | None:
        return self.arrays.get(key(split, flipped))

    def tensor(self, split: str, flipped: bool = False) -> torch.Tensor | None:
        """A split's features as a tensor over the mapped array (no copy; a float16 cache
        stays float16, converted by stage 2 a block of rows at a time)."""
        a = self.get(split, flipped)
        return None if a is None else torch.from_numpy(a)


def build_cache(
    backbone: nn.Module, datasets: dict[str, EvalSet], rt: Runtime, *, flip: bool
) -> FeatureCache:
    """A cache in memory (features taken again, not saved: live stage 2's moved BatchNorm)."""
    arrays: dict[str, np.ndarray] = {}
    for split, ds in datasets.items():
        plain, mirrored = extract(backbone, ds, rt, flip=flip)
        arrays[split] = plain
        if mirrored is not None:
            arrays[key(split, True)] = mirrored
    return FeatureCache(arrays)
