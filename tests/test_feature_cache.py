"""The feature cache: one .npy per split and view in RUN/features/, written in place and mapped by
its readers; float16 on request; runs made with the one features.npz still open."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import flat, ok, one_line_error, run_cli
from lort import files
from lort.data.feature_files import load_feature_splits
from lort.data.sources import FeatureRows
from lort.run.finished import open_run
from test_features_dataset import write_features

FAST = ("--epochs1", "2", "--epochs2", "3", "--smooth", "0.9")
VIEWS = {"train", "train_flip", "val", "val_flip", "test", "test_flip"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_features(tmp_path_factory.mktemp("cache") / "data", val=True)


@pytest.fixture(scope="module")
def run(data: Path) -> Path:
    out = data.parent / "run"
    ok("fit", "--dataset", "features", "--data-root", data, "--out", out, *FAST)
    return out


def state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def test_one_recorded_npy_per_split_and_view(run: Path, data: Path) -> None:
    index = json.loads((run / "features" / "index.json").read_text())
    assert index["dtype"] == "float32" and set(index["arrays"]) == VIEWS
    records = state(run)["files"]
    for view in VIEWS:
        a = np.load(run / "features" / f"{view}.npy")
        assert a.dtype == np.float32 and list(a.shape) == index["arrays"][view]
        assert (
            records[f"features/{view}.npy"]["sha256"]
            == files.digest(run / "features" / f"{view}.npy").sha256
        )
    np.testing.assert_array_equal(
        np.load(run / "features" / "test_flip.npy"), np.load(data / "test_flipped_features.npy")
    )
    assert not (run / "features.npz").exists()


def test_readers_map_the_cache(run: Path) -> None:
    cache = open_run(run).problem.cache
    assert set(cache.arrays) == VIEWS
    assert all(isinstance(a, np.memmap) for a in cache.arrays.values())
    feats = cache.tensor("train")
    assert feats is not None and feats.dtype.is_floating_point


def test_given_features_are_mapped_not_copied(data: Path) -> None:
    raw = load_feature_splits(data)
    assert isinstance(raw.train_images, FeatureRows)
    assert isinstance(raw.train_images.plain, np.memmap)
    assert isinstance(raw.train_images.mirror, np.memmap)


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "a.npy"
    with pytest.raises(RuntimeError), files.atomic_npy(dest, (4, 3), np.float32) as target:
        target.array[:2] = 1.0
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with files.atomic_npy(dest, (4, 3), np.float16) as target:
        target.array[:] = np.arange(12).reshape(4, 3)
    assert target.written == files.digest(dest)
    np.testing.assert_array_equal(np.load(dest), np.arange(12).reshape(4, 3).astype(np.float16))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_a_damaged_index_is_one_line(run: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "features" / "index.json").write_text('{"arrays": 3}\n')
    one_line_error(run_cli("compare", copy, "--methods", "ce"), "index.json", "--resume")
    result = ok("fit", "--resume", "--out", copy)
    assert "copying it again" in flat(result.stderr)
    ok("compare", copy, "--methods", "ce")


def to_old_layout(run: Path) -> None:
    """The run as lort wrote it before the mapped cache: every view in one features.npz,
    recorded in state.json, and no features/ folder."""
    arrays = {p.stem: np.load(p) for p in (run / "features").glob("*.npy")}
    st = state(run)
    st["files"] = {k: v for k, v in st["files"].items() if not k.startswith("features/")}
    written = files.write_npz(run / "features.npz", arrays)
    st["files"]["features.npz"] = {"size": written.size, "sha256": written.sha256}
    (run / "state.json").write_text(json.dumps(st))
    shutil.rmtree(run / "features")


def test_a_run_with_the_old_features_npz_still_opens(run: Path, tmp_path: Path) -> None:
    old = shutil.copytree(run, tmp_path / "old")
    to_old_layout(old)
    opened = open_run(old)
    assert set(opened.problem.cache.arrays) == VIEWS
    expected = open_run(run).problem.cache.get("val_flip")
    np.testing.assert_array_equal(opened.problem.cache.get("val_flip"), expected)
    ok("compare", old, "--methods", "ce,lort")
    result = ok("fit", "--resume", "--out", old)  # the old cache is used as it is
    assert "copying" not in flat(result.stderr) and not (old / "features").exists()
    new = json.loads((run / "report.json").read_text())["results"]
    assert json.loads((old / "report.json").read_text())["results"] == new


def test_float16_cache(run: Path, data: Path) -> None:
    out = data.parent / "half"
    ok("fit", "--dataset", "features", "--data-root", data, "--out", out, *FAST,
       "--cache-dtype", "float16")  # fmt: skip
    assert json.loads((out / "features" / "index.json").read_text())["dtype"] == "float16"
    half = np.load(out / "features" / "train.npy")
    full = np.load(run / "features" / "train.npy")
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, rtol=1e-3, atol=1e-3)
    assert (out / "features" / "train.npy").stat().st_size < 0.6 * (
        run / "features" / "train.npy"
    ).stat().st_size
    acc = [
        json.loads((r / "report.json").read_text())["results"]["overall"]["accuracy"]
        for r in (run, out)
    ]
    assert abs(acc[0] - acc[1]) <= 0.05, acc
    ok("compare", out, "--methods", "ce")
    # the dtype shaped the cache: a resume cannot change it
    result = run_cli("fit", "--resume", "--out", out, "--cache-dtype", "float32")
    one_line_error(result, "cache_dtype")


def test_the_cached_loop_gathers_rows_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop never copies the (mapped) features whole: it gathers a block of steps' rows at
    a time, and the head it trains does not depend on the block's size."""
    import torch

    from lort.methods import get_method
    from lort.optim import StageConfig
    from lort.stage2 import loop

    g = torch.Generator().manual_seed(0)
    feats, flipped = torch.rand(300, 8, generator=g), torch.rand(300, 8, generator=g)
    labels = torch.arange(300) % 5
    counts = np.bincount(labels.numpy())
    init = torch.nn.Linear(8, 5)
    st = StageConfig(2, 0.05, 1e-4, 16)

    def trained() -> list[torch.Tensor]:
        head = loop.train_head_cached(
            get_method("lort"), feats, flipped, labels, counts, init, st, smooth=0.9, seed=3
        )
        return list(head.state_dict().values())

    whole = trained()
    monkeypatch.setattr(loop, "GATHER_BYTES", 1)  # one step's rows at a time
    assert all(torch.equal(a, b) for a, b in zip(trained(), whole, strict=True))


def test_the_cached_loop_reports_progress_at_a_bounded_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading a step's loss and accuracy back costs as much as a small step: the loop reports
    after its first step, then at most every REPORT_S and at the end of every epoch."""
    import torch

    from lort.methods import get_method
    from lort.optim import StageConfig
    from lort.stage2 import loop

    feats = torch.rand(300, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(300) % 5
    calls: list[tuple] = []
    monkeypatch.setattr(loop, "REPORT_S", float("inf"))
    loop.train_head_cached(
        get_method("ce"), feats, None, labels, np.bincount(labels.numpy()), None,
        StageConfig(3, 0.05, 1e-4, 16), smooth=0.0, seed=0, progress=lambda *a: calls.append(a),
    )  # fmt: skip
    assert [c[1:3] for c in calls] == [(1, 57), (19, 57), (38, 57), (57, 57)]  # first, epochs
    assert all(0.0 <= c[4] <= 1.0 and c[3] > 0 for c in calls)


def test_a_float16_cache_is_converted_block_by_block(
    run: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stage 2 reads a float16 cache as it is mapped (no float32 copy of a whole split): the
    grid, the cached loop and inference convert the rows they read, so each trains and scores
    exactly as on the same values given in float32, whatever the block size."""
    import torch

    from lort.methods import get_method
    from lort.optim import StageConfig
    from lort.stage2 import loop, problem
    from lort.stage2.grid import EvalSplit, HeadConfig, train_head_grid

    out = data.parent / "half"
    if not out.exists():
        ok("fit", "--dataset", "features", "--data-root", data, "--out", out, *FAST,
           "--cache-dtype", "float16")  # fmt: skip
    cache = open_run(out).problem.cache
    tensor = cache.tensor("train")
    assert tensor is not None and tensor.dtype == torch.float16
    assert np.shares_memory(tensor.numpy(), cache.arrays["train"])

    g = torch.Generator().manual_seed(0)
    half = torch.rand(300, 8, generator=g).half()
    half_flip = torch.rand(300, 8, generator=g).half()
    labels = torch.arange(300) % 5
    counts = np.bincount(labels.numpy())
    init = torch.nn.Linear(8, 5)
    st = StageConfig(2, 0.05, 1e-4, 16)
    method = get_method("lort")
    configs = [HeadConfig(st, 3, {"smooth": d}) for d in (0.5, 0.9)]

    def trained(f: torch.Tensor, f_flip: torch.Tensor) -> list[torch.Tensor]:
        head = loop.train_head_cached(
            method, f, f_flip, labels, counts, init, st, smooth=0.9, seed=3
        )
        split = EvalSplit(f[:60], f_flip[:60], labels[:60])
        heads = train_head_grid(method, f, f_flip, labels, counts, init, configs, val=split)
        z = problem.infer(method, head, f[:60], f_flip[:60], counts, 1.0)
        return [*head.state_dict().values(), *(r.best_head.weight for r in heads), z]

    want = trained(half.float(), half_flip.float())
    for gather in (1, loop.GATHER_BYTES):  # one step's rows at a time, and the default
        monkeypatch.setattr(loop, "GATHER_BYTES", gather)
        monkeypatch.setattr(loop, "CONVERT_BYTES", gather)
        got = trained(half, half_flip)
        assert all(a.dtype == torch.float32 for a in got)
        # Training is exact; logits of rows blocked otherwise agree to the product's rounding.
        assert all(torch.equal(a, b) for a, b in zip(got[:-1], want[:-1], strict=True))
        torch.testing.assert_close(got[-1], want[-1], rtol=1e-6, atol=1e-6)
