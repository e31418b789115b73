"""Extract frozen-backbone features once, into an on-disk cache in the run folder,
so that any number of stage-2 re-trainings reuse them. Each split is stored as
the plain view and, where flips are used, the horizontally flipped view."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lort.data import LTData
from lort.data.tensor_images import TensorImages
from lort.runtime import Runtime
from lort.stage1.loop import autocast

EvalSet = Dataset | TensorImages
# Images per forward pass of the feature cache (``lort predict`` uses the same by default: the
# same batches give the same floats).
BATCH = 256


@torch.no_grad()
def extract(
    backbone: nn.Module,
    dataset: EvalSet,
    rt: Runtime,
    *,
    flip: bool,
    batch_size: int = BATCH,
    workers: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features of every sample in order (eval mode), and of its mirror image."""
    backbone.eval().to(rt.device)
    plain, mirrored = [], []
    batches = (
        dataset.in_order(batch_size)
        if isinstance(dataset, TensorImages)
        else DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    )
    for x, _ in batches:
        x = x.to(rt.device)
        with autocast(rt.device):
            plain.append(backbone(x).float().cpu())
            if flip:
                mirrored.append(backbone(torch.flip(x, dims=[3])).float().cpu())
    dim = getattr(backbone, "feature_dim", None)
    empty = np.zeros((0, dim or 0), np.float32)
    a = torch.cat(plain).numpy() if plain else empty
    b = (torch.cat(mirrored).numpy() if mirrored else empty) if flip else None
    return a, b


@dataclass
class FeatureCache:
    """Features per split as float32 arrays (``None`` where a split or view is absent)."""

    arrays: dict[str, np.ndarray]

    def get(self, split: str, flipped: bool = False) -> np.ndarray | None:
        return self.arrays.get(f"{split}_flip" if flipped else split)

    def tensor(self, split: str, flipped: bool = False) -> torch.Tensor | None:
        a = self.get(split, flipped)
        return None if a is None else torch.from_numpy(a)


def build_cache(
    backbone: nn.Module, datasets: dict[str, EvalSet], rt: Runtime, *, flip: bool
) -> FeatureCache:
    arrays: dict[str, np.ndarray] = {}
    for split, ds in datasets.items():
        plain, mirrored = extract(backbone, ds, rt, flip=flip)
        arrays[split] = plain
        if mirrored is not None:
            arrays[f"{split}_flip"] = mirrored
    return FeatureCache(arrays)


def given_features(data: LTData, *, flip: bool) -> FeatureCache:
    """The cache of a ``features`` dataset: its arrays as given (each split N x D, or N x 2 x D
    with the mirrored view, kept when ``flip``)."""
    arrays: dict[str, np.ndarray] = {}
    for split, a in data.sources.items():
        a = np.asarray(a, dtype=np.float32)
        arrays[split] = np.ascontiguousarray(a[:, 0] if a.ndim == 3 else a)
        if flip and a.ndim == 3:
            arrays[f"{split}_flip"] = np.ascontiguousarray(a[:, 1])
    return FeatureCache(arrays)
