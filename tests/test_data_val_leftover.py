"""``val_split: leftover``: a balanced validation set drawn from the images the long-tail profile
did not keep, so that the training set stays the standard long-tailed one; ``fraction`` (the
carve out of training) unchanged; old run folders, saved before the key, open as carved.

Most tests use a balanced features folder (no images to decode): 10 classes of 200 training
rows in shuffled order, each row tagged with its position in column 0, cut to IR 10
(200 down to 20), so V = min(max(20, 1000 / 10), 5% of 200) = 10.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cli_helpers import flat, ok
from lort.config import resolve, run_values
from lort.data import LTData, build_dataset
from lort.data.sources import ImageFiles
from lort.data.split import leftover_per_class, leftover_val_split
from lort.errors import InputError
from lort.run.folder import CONFIG, REPORT, STAGE1, RunFolder

K, PER_CLASS, DIM, RATIO = 10, 200, 8, 10.0
V = 10


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("balanced")
    rng = np.random.default_rng(0)
    for split, n in (("train", PER_CLASS), ("test", 5)):
        y = rng.permutation(np.repeat(np.arange(K), n))
        x = rng.normal(size=(y.size, DIM)).astype(np.float32) + y[:, None]
        x[:, 0] = np.arange(y.size)  # the row's position, to follow it through the split
        np.save(root / f"{split}_features.npy", x)
        np.save(root / f"{split}_labels.npy", y)
    return root


def rows(data: LTData, split: str) -> np.ndarray:
    """The positions (column 0) of a split's feature rows, or the paths of its images."""
    images = data.sources[split]
    if isinstance(images, ImageFiles):
        return images.paths
    return images.block(0, len(images))[:, 0].astype(np.int64)


def build(root: Path, **options: Any) -> LTData:
    return build_dataset("features", data_root=root, imbalance_ratio=RATIO, **options)


def test_leftover_is_balanced_disjoint_and_keeps_the_long_tail(balanced: Path) -> None:
    data = build(balanced, val_split="leftover", seed=3)
    plain = build(balanced, val_split="fraction", val_fraction=0.0, seed=3)
    assert plain.val_labels is None and data.val_labels is not None
    assert leftover_per_class(K, PER_CLASS) == V
    m = data.manifest
    assert m["val_counts"] == [V] * K and m["val_total"] == V * K
    assert m["val_from_kept"] == [V] + [0] * (K - 1)
    assert m["val_rule"].startswith(f"leftover: {V} per class") and "0 10" in m["val_rule"]
    assert m["kept_sha256"] == plain.manifest["kept_sha256"] and m["val_sha256"] is not None
    train, val, kept = rows(data, "train"), rows(data, "val"), rows(plain, "train")
    assert np.intersect1d(train, val).size == 0
    # the long-tailed training set, in its order, less what the head class gave up
    head_gave = np.intersect1d(val, kept)
    assert head_gave.size == V and set(plain.train_labels[np.isin(kept, head_gave)]) == {0}
    np.testing.assert_array_equal(train, kept[~np.isin(kept, head_gave)])
    np.testing.assert_array_equal(
        data.train_counts(), plain.train_counts() - np.array(m["val_from_kept"])
    )
    assert len(data.sources["val"]) == V * K


def test_leftover_is_deterministic_per_seed(balanced: Path) -> None:
    first = rows(build(balanced, val_split="leftover", seed=1), "val")
    np.testing.assert_array_equal(first, rows(build(balanced, val_split="leftover", seed=1), "val"))
    assert not np.array_equal(first, rows(build(balanced, val_split="leftover", seed=2), "val"))


def test_a_class_gives_up_only_what_it_lacks_and_keeps_one() -> None:
    # class 0: 3 kept, 0 left over; class 1: 2 kept, 2 left over; class 2: 1 kept, 9 left over
    labels = np.repeat(np.arange(3), [3, 4, 10])
    kept = np.array([0, 1, 2, 3, 4, 7], dtype=np.int64)
    train, val, from_kept = leftover_val_split(labels, kept, 3, per_class=4, seed=0)
    assert from_kept.tolist() == [2, 1, 0]
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 3, 4]
    assert np.bincount(labels[train], minlength=3).tolist() == [1, 1, 1]
    assert np.intersect1d(train, val).size == 0 and set(train) <= set(kept)
    assert set(val[labels[val] == 2]).isdisjoint(kept)


def test_near_balanced_profile_takes_the_rest_from_kept_images(balanced: Path) -> None:
    data = build_dataset("features", data_root=balanced, imbalance_ratio=1.02, val_split="leftover")
    plain = build_dataset("features", data_root=balanced, imbalance_ratio=1.02)
    left = PER_CLASS - plain.train_counts()
    m = data.manifest
    assert m["val_counts"] == [V] * K
    assert m["val_from_kept"] == [max(0, V - int(n)) for n in left]


def test_fraction_is_unchanged_and_an_explicit_fraction_carves(balanced: Path) -> None:
    carved = build(balanced, val_fraction=0.25, seed=4)
    for rule in ("fraction", "leftover"):
        again = build(balanced, val_split=rule, val_fraction=0.25, seed=4)
        assert again.manifest["val_sha256"] == carved.manifest["val_sha256"]
    m = carved.manifest
    assert m["val_rule"] == "fraction 0.25 carved from training"
    assert m["val_from_kept"] == m["val_counts"]
    assert build(balanced).manifest["val_rule"] == "none"
    with pytest.raises(InputError, match="validation rule"):
        build(balanced, val_split="random")


def test_leftover_on_an_image_folder(tmp_path: Path) -> None:
    for label, name in enumerate("abc"):
        for split, n in (("train", 40), ("test", 2)):
            (tmp_path / split / name).mkdir(parents=True)
            for k in range(n):
                Image.new("RGB", (8, 8), (80 * label, 5 * k, 0)).save(
                    tmp_path / split / name / f"{k:02d}.png"
                )
    data = build_dataset("imagefolder", data_root=tmp_path, imbalance_ratio=4, val_split="leftover")
    plain = build_dataset("imagefolder", data_root=tmp_path, imbalance_ratio=4)
    assert data.manifest["val_counts"] == [2, 2, 2]  # 5% of 40
    assert data.manifest["val_from_kept"] == [2, 0, 0]
    train, val, kept = rows(data, "train"), rows(data, "val"), rows(plain, "train")
    assert set(train).isdisjoint(val)
    assert set(val[2:]).isdisjoint(kept) and set(train) == set(kept) - set(val[:2])
    assert data.dataset("val")[0][0].shape == (3, 8, 8)


# --------------------------------------------------------------------------------------
# The config key.


def test_config_defaults_and_an_explicit_fraction() -> None:
    cifar = resolve({"dataset": "cifar10-lt"}, {})
    # --smooth auto (LORT) takes its delta on the leftover split: nothing is carved
    assert (cifar.val_split, cifar.val_fraction, cifar.smooth) == ("leftover", 0.0, "auto")
    assert cifar.to_dict()["val_split"] == "leftover"
    carve = resolve({"dataset": "cifar10-lt"}, {"val_fraction": 0.1})
    assert (carve.val_split, carve.val_fraction) == ("fraction", 0.1)
    assert any("--val-split fraction" in n for n in carve.notes)
    with pytest.raises(InputError, match="drop one"):
        resolve({"dataset": "cifar10-lt", "val_split": "leftover"}, {"val_fraction": 0.1})
    # natural counts leave nothing over: --smooth auto's carve, recorded as the carve it is
    natural = resolve({"dataset": "imagefolder", "data_root": "x"}, {})
    assert (natural.val_split, natural.val_fraction) == ("fraction", 0.2)
    asked = resolve({"dataset": "imagefolder", "data_root": "x"}, {"val_split": "leftover"})
    assert (asked.val_split, asked.val_fraction) == ("fraction", 0.2)
    given = resolve({"dataset": "imagefolder", "data_root": "x"}, {"val_fraction": 0.1})
    assert (given.val_split, given.val_fraction) == ("fraction", 0.1)
    digits = resolve({}, {})
    assert (digits.val_split, digits.val_fraction) == ("fraction", 0.2)
    digits = resolve({}, {"val_split": "leftover"})
    assert (digits.val_split, digits.val_fraction) == ("leftover", 0.0)
    with pytest.raises(InputError, match=r"^val_split must be leftover or fraction"):
        resolve({"val_split": "half"}, {})
    with pytest.raises(InputError, match="val_split must be a string"):
        resolve({"val_split": 1}, {})
    assert run_values({})["val_split"] == "fraction"
    assert run_values({"val_split": "leftover"})["val_split"] == "leftover"
    # a run saved before the carve was recorded as one: read as what it did
    assert run_values({"val_split": "leftover", "val_fraction": 0.2})["val_split"] == "fraction"


# --------------------------------------------------------------------------------------
# Run folders.


def test_fit_takes_the_leftover_split_by_default(balanced: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = ok("fit", "--dataset", "features", "--data-root", balanced, "--imbalance-ratio", "10",
                "--out", run, "--dry-run")  # fmt: skip
    assert yaml.safe_load(result.stdout)["val_split"] == "leftover"
    assert f", {V * K} val," in flat(result.stderr)


def test_a_carve_is_saved_as_one(balanced: Path, tmp_path: Path) -> None:
    """Natural counts (no imbalance ratio) leave nothing over, so --smooth auto carves: the
    saved config says fraction, as the manifest does, not the leftover that was not taken."""
    run = tmp_path / "run"
    args = ("fit", "--dataset", "features", "--data-root", balanced, "--out", run)
    result = ok(*args, "--dry-run")
    assert yaml.safe_load(result.stdout)["val_split"] == "fraction"
    assert "validation fraction 0.2 carved from training" in flat(result.stderr)
    ok(*args, "--epochs1", "1", "--epochs2", "1", "--smooth", "0.5", "--val-split", "leftover",
       "--val-fraction", "0.2")  # fmt: skip
    saved = yaml.safe_load((run / CONFIG).read_text())
    assert (saved["val_split"], saved["val_fraction"]) == ("fraction", 0.2)
    assert json.loads((run / "manifest.json").read_text())["val_rule"].startswith("fraction 0.2")


def test_a_run_that_saved_its_carve_as_leftover_still_opens(balanced: Path, tmp_path: Path) -> None:
    """Runs saved before the carve was recorded as one say ``val_split: leftover`` beside
    ``val_fraction: 0.2`` (config.yaml, the stage-1 checkpoint, the report): the same split,
    so they open, resume and re-train as before."""
    from lort.run.finished import open_run
    from lort.run.trained import open_trained

    run = tmp_path / "run"
    ok("fit", "--dataset", "features", "--data-root", balanced, "--epochs1", "1", "--epochs2",
       "1", "--smooth", "0.5", "--val-fraction", "0.2", "--out", run)  # fmt: skip
    manifest = json.loads((run / "manifest.json").read_text())
    folder = RunFolder(run)
    saved = yaml.safe_load((run / CONFIG).read_text())
    assert saved["val_split"] == "fraction"
    (run / CONFIG).write_text(yaml.safe_dump(saved | {"val_split": "leftover"}, sort_keys=False))
    stage1 = torch.load(run / STAGE1, weights_only=False)
    stage1["config"]["val_split"] = "leftover"
    folder.save_torch(STAGE1, stage1)
    report = json.loads((run / REPORT).read_text())
    report["config"]["val_split"] = "leftover"
    folder.write_json(REPORT, report)
    opened = open_run(run)
    assert opened.cfg.val_split == "fraction" and opened.has_val
    assert opened.problem.data.manifest["val_sha256"] == manifest["val_sha256"]
    assert open_trained(run).cfg.val_split == "fraction"
    ok("compare", run, "--protocol", "shared", "--methods", "ce")
    result = ok("fit", "--resume", "--out", run)
    assert "cannot change" not in flat(result.output)
    assert yaml.safe_load((run / CONFIG).read_text())["val_split"] == "fraction"


def _drop_val_split(run: Path) -> None:
    """Make ``run`` look like a run saved before ``val_split`` existed."""
    folder = RunFolder(run)
    saved = yaml.safe_load((run / CONFIG).read_text())
    assert saved.pop("val_split") == "fraction"
    (run / CONFIG).write_text(yaml.safe_dump(saved, sort_keys=False))
    stage1 = torch.load(run / STAGE1, weights_only=False)
    del stage1["config"]["val_split"]
    folder.save_torch(STAGE1, stage1)
    report = json.loads((run / REPORT).read_text())
    del report["config"]["val_split"]
    folder.write_json(REPORT, report)


def test_a_run_saved_before_val_split_opens_with_its_data(balanced: Path, tmp_path: Path) -> None:
    from lort.run.finished import open_run
    from lort.run.trained import open_trained

    run = tmp_path / "run"
    ok("fit", "--dataset", "features", "--data-root", balanced, "--imbalance-ratio", "10",
       "--val-split", "fraction", "--epochs1", "1", "--epochs2", "1", "--smooth", "0.5",
       "--out", run)  # fmt: skip
    manifest = json.loads((run / "manifest.json").read_text())
    _drop_val_split(run)
    # read fresh, the same options would now take the leftover split ...
    fresh = resolve(yaml.safe_load((run / CONFIG).read_text()), {})
    assert fresh.val_split == "leftover"
    # ... but as the run's config they mean what they meant when it was made
    opened = open_run(run)
    assert opened.cfg.val_split == "fraction" and not opened.has_val
    assert opened.problem.data.manifest["kept_sha256"] == manifest["kept_sha256"]
    assert opened.problem.data.val_labels is None
    assert open_trained(run).cfg.val_split == "fraction"
    result = ok("fit", "--resume", "--out", run)
    assert "cannot change" not in flat(result.output)
    assert yaml.safe_load((run / CONFIG).read_text())["val_split"] == "fraction"
