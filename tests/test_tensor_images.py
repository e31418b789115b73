"""The in-memory stage-1 path: one decode, crop + flip + normalise by one gather per batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lort.data.sources import ImageFiles
from lort.data.tensor_images import MAX_BYTES, TensorImages, decode_small
from lort.data.transforms import CIFAR_MEAN, CIFAR_STD, TransformSpec
from lort.errors import InputError

SPEC = TransformSpec("small", 8, CIFAR_MEAN, CIFAR_STD)
CPU = torch.device("cpu")


def pixels(n: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def reference(image: np.ndarray, dy: int, dx: int, flip: bool, pad: int = 4) -> torch.Tensor:
    """RandomCrop(padding=pad, fill 0) at (dy, dx), optional mirror, ToTensor, Normalize."""
    s = image.shape[0]
    padded = np.zeros((s + 2 * pad, s + 2 * pad, 3), np.uint8)
    padded[pad : pad + s, pad : pad + s] = image
    crop = padded[dy : dy + s, dx : dx + s]
    if flip:
        crop = crop[:, ::-1]
    x = torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 255
    mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize(("dy", "dx"), [(0, 0), (4, 4), (8, 1), (3, 8)])
def test_crop_matches_pad_crop_flip_normalise(dy: int, dx: int, flip: bool) -> None:
    px = pixels(5)
    labels = np.arange(5)
    ti = TensorImages(px, labels, SPEC, CPU)
    idx = torch.tensor([3, 1])
    x, y = ti.crop(idx, torch.tensor([[dy, dx], [dy, dx]]), torch.tensor([flip, flip]))
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert y.tolist() == [3, 1]
    for row, i in enumerate(idx.tolist()):
        torch.testing.assert_close(x[row], reference(px[i], dy, dx, flip), rtol=1e-5, atol=1e-5)


def test_epoch_visits_every_image_once_and_is_reproducible() -> None:
    ti = TensorImages(pixels(23), np.arange(23) % 4, SPEC, CPU)
    assert ti.steps(5) == 5
    first = [(x.clone(), y.clone()) for x, y in ti.epoch(5, seed=1, epoch=2)]
    again = list(ti.epoch(5, seed=1, epoch=2))
    assert [len(y) for _, y in first] == [5, 5, 5, 5, 3]
    for (a, ya), (b, yb) in zip(first, again, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    other = torch.cat([x for x, _ in ti.epoch(5, seed=1, epoch=3)])
    assert not torch.equal(torch.cat([x for x, _ in first]), other)


def test_ranks_share_out_one_epoch() -> None:
    """Two ranks see disjoint halves of the shuffled order (padded by wrap-around)."""
    n = 11
    ti = TensorImages(pixels(n), np.arange(n), SPEC, CPU)
    seen = [torch.cat([y for _, y in ti.epoch(4, 0, 0, rank=r, world=2)]) for r in (0, 1)]
    assert [len(s) for s in seen] == [6, 6]
    assert ti.steps(4, world=2) == 2
    assert set(torch.cat(seen).tolist()) == set(range(n))


def test_decode_small_reads_files_and_refuses_mixed_sizes(tmp_path) -> None:
    from PIL import Image

    px = pixels(3)
    for i, a in enumerate(px):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    files = ImageFiles(tmp_path, np.array([f"{i}.png" for i in range(3)]))
    out = decode_small(files, 8)
    assert out is not None and np.array_equal(out, px)
    Image.fromarray(pixels(1, size=9)[0]).save(tmp_path / "big.png")
    mixed = ImageFiles(tmp_path, np.array(["0.png", "big.png"]))
    with pytest.raises(InputError, match=r"big\.png is 9x9; .* 8x8"):
        decode_small(mixed, 8)


def test_decode_small_passes_arrays_and_refuses_what_does_not_fit() -> None:
    px = pixels(4)
    assert decode_small(px, 8) is px
    assert decode_small(px.astype(np.float32), 8) is None
    assert decode_small(px, 9) is None
    huge = np.lib.stride_tricks.as_strided(px[:1], (MAX_BYTES // 192 + 1, 8, 8, 3))
    assert decode_small(huge, 8) is None


def test_drop_last_keeps_only_full_batches() -> None:
    ti = TensorImages(pixels(23), np.arange(23), SPEC, CPU)
    assert ti.steps(5, drop_last=True) == 4
    sizes = [len(y) for _, y in ti.epoch(5, seed=0, epoch=0, drop_last=True)]
    assert sizes == [5, 5, 5, 5]


def test_in_order_is_the_eval_transform() -> None:
    px = pixels(7)
    ti = TensorImages(px, np.arange(7), SPEC, CPU)
    batches = list(ti.in_order(3))
    assert [len(y) for _, y in batches] == [3, 3, 1]
    x = torch.cat([b for b, _ in batches])
    for i in range(7):
        torch.testing.assert_close(x[i], reference(px[i], 4, 4, False), rtol=1e-5, atol=1e-5)


def test_chunked_gathers_give_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """How many images one gather augments does not change a single batch."""
    import lort.data.tensor_images as ti_module

    ti = TensorImages(pixels(23), np.arange(23), SPEC, CPU)
    whole = list(ti.epoch(4, seed=3, epoch=1))
    monkeypatch.setattr(ti_module, "CHUNK_IMAGES", 5)  # one batch of 4 per gather
    pieces = list(ti.epoch(4, seed=3, epoch=1))
    assert len(whole) == len(pieces) == 6
    for (a, ya), (b, yb) in zip(whole, pieces, strict=True):
        assert torch.equal(a, b) and torch.equal(ya, yb)
