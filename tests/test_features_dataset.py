"""``--dataset features``: a folder of .npy features made by anything; no backbone, a linear
cross-entropy stage 1, then stage 2, compare, sweep, analyze, predict and export on the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from cli_helpers import flat, ok, one_line_error, run_cli
from lort.run.finished import open_run

K, DIM = 6, 16
FAST = ("--epochs2", "3")


def write_features(
    root: Path, *, flips: bool = True, val: bool = False, names: bool = True, seed: int = 0
) -> Path:
    """Separable long-tailed features: 40 down to 4 training rows per class, 10 test rows."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(K, DIM)).astype(np.float32) * 2
    counts = {"train": [40, 25, 16, 10, 6, 4], "val": [3] * K, "test": [10] * K}
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test") if val else ("train", "test"):
        y = np.repeat(np.arange(K), counts[split])
        x = means[y] + rng.normal(size=(y.size, DIM)).astype(np.float32)
        np.save(root / f"{split}_features.npy", x)
        np.save(root / f"{split}_labels.npy", y)
        if flips:
            np.save(root / f"{split}_flipped_features.npy", x + 0.1)
    if names:
        (root / "class_names.txt").write_text("".join(f"class-{c}\n" for c in range(K)))
    return root


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("features")
    data = write_features(tmp / "data")
    out = tmp / "run"
    ok("fit", "--dataset", "features", "--data-root", data, "--out", out, *FAST)
    return out


def report(run: Path) -> dict[str, Any]:
    return json.loads((run / "report.json").read_text())


def test_fit_on_features_is_a_run_like_any(feature_run: Path) -> None:
    rep = report(feature_run)
    cfg = yaml.safe_load((feature_run / "config.yaml").read_text())
    assert cfg["dataset"] == "features" and cfg["arch"] == "none"
    assert "pretrained" not in cfg  # unset pretrained options are not written
    assert rep["manifest"]["class_names"] == [f"class-{c}" for c in range(K)]
    assert rep["manifest"]["train_counts"][-1] >= 1 and rep["flip_tta"] is True
    assert rep["input"]["kind"] == "features"
    assert rep["results"]["rows"] == 10 * K
    index = json.loads((feature_run / "features" / "index.json").read_text())
    assert set(index["arrays"]) == {"test", "test_flip", "train", "train_flip", "val", "val_flip"}
    data = Path(cfg["data_root"])
    cached = np.load(feature_run / "features" / "test.npy")
    np.testing.assert_array_equal(cached, np.load(data / "test_features.npy"))
    # stage 1 is a linear classifier trained on the features, saved as a run's stage1.ckpt
    stage1 = torch.load(feature_run / "stage1.ckpt", weights_only=False)["state"]
    assert set(stage1["model"]) == {"head.weight", "head.bias"} and stage1["epoch"] == 30
    # separable features: the linear head is far above chance (1/6)
    assert rep["results"]["overall"]["accuracy"] > 0.8


def test_open_run_compare_sweep_and_analyze_work_on_a_features_run(
    feature_run: Path, tmp_path: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(feature_run, run)
    finished = open_run(run)
    assert finished.problem.flips and finished.problem.k == K
    ok("compare", run, "--methods", "ce,lws,tau-norm,logit-adjust")
    subset = "ce_lws_tau-norm_logit-adjust"  # a compare of these four methods names its files
    assert (run / f"compare-{subset}.json").is_file()
    assert (run / "figures" / f"group_metrics-{subset}.png").is_file()
    ok("sweep", run, "--smooth", "0,0.5")
    assert (run / "sweep-smooth.json").is_file()
    result = ok(
        "analyze",
        run / "logits.npy",
        "--labels",
        run / "labels.npy",
        "--train-counts",
        run / "train_counts.npy",
    )
    assert "many" in result.output or "few" in result.output


def test_fresh_head_without_stage1_and_no_flips(tmp_path: Path) -> None:
    data = write_features(tmp_path / "data", flips=False, names=False)
    out = tmp_path / "run"
    ok("fit", "--dataset", "features", "--data-root", data, "--out", out, "--epochs1", "0",
       "--epochs2", "2", "--method", "ce")  # fmt: skip
    rep = report(out)
    assert rep["flip_tta"] is False and rep["manifest"]["class_names"] == [str(c) for c in range(K)]
    assert sorted(p.name for p in (out / "features").glob("*.npy")) == ["test.npy", "train.npy"]


def test_a_shipped_validation_split_is_used_not_carved(tmp_path: Path) -> None:
    data = write_features(tmp_path / "data", val=True)
    out = tmp_path / "run"
    ok("fit", "--dataset", "features", "--data-root", data, "--out", out, *FAST)
    rep = report(out)
    assert rep["config"]["val_fraction"] == 0.0 and rep["manifest"]["val_total"] == 3 * K
    assert rep["smooth"]["mode"] == "auto"


def _break(root: Path, how: str) -> None:
    if how == "nan":
        x = np.load(root / "train_features.npy")
        x[7, 3] = np.nan
        np.save(root / "train_features.npy", x)
    elif how == "float-labels":
        np.save(root / "test_labels.npy", np.load(root / "test_labels.npy").astype(np.float32))
    elif how == "label-range":
        y = np.load(root / "test_labels.npy")
        y[0] = K
        np.save(root / "test_labels.npy", y)
    elif how == "negative":
        y = np.load(root / "train_labels.npy")
        y[0] = -1
        np.save(root / "train_labels.npy", y)
    elif how == "rows":
        np.save(root / "test_labels.npy", np.load(root / "test_labels.npy")[:-1])
    elif how == "dim":
        np.save(root / "test_features.npy", np.zeros((10 * K, DIM + 1), np.float32))
    elif how == "int-features":
        np.save(root / "test_features.npy", np.zeros((10 * K, DIM), np.int32))
    elif how == "missing":
        (root / "test_features.npy").unlink()
    elif how == "some-flips":
        (root / "test_flipped_features.npy").unlink()
    elif how == "empty-class":
        y = np.load(root / "train_labels.npy")
        y[y == 2] = 1
        np.save(root / "train_labels.npy", y)
    elif how == "not-npy":
        (root / "train_labels.npy").write_text("0 1 2")
    elif how in ("huge", "huge-flipped"):
        name = "test_features.npy" if how == "huge" else "test_flipped_features.npy"
        x = np.load(root / name)
        x[5] = np.where(np.arange(DIM) % 2, 1e38, -1e38)
        np.save(root / name, x)


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("nan", "train_features.npy row 7 holds NaN or Inf"),
        ("float-labels", "test_labels.npy must be a 1-D array of integers"),
        ("label-range", "test_labels.npy holds label 6, but"),
        ("negative", "holds a negative label (-1)"),
        ("rows", "has 59 labels for 60 feature rows"),
        ("dim", "has 17 features per row, train_features.npy has 16"),
        ("int-features", "must be a 2-D float array"),
        ("missing", "test_features.npy is missing"),
        ("some-flips", "has flipped features for train only"),
        ("empty-class", "class 2 (class-2) has no training sample"),
        ("not-npy", "cannot read"),
        ("huge", "test_features.npy row 5 holds a value of magnitude 1e+38, beyond 1e+06"),
        ("huge-flipped", "test_flipped_features.npy row 5 holds a value of magnitude 1e+38"),
    ],
)
def test_bad_features_are_one_clean_error_and_nothing_is_written(
    how: str, expected: str, tmp_path: Path
) -> None:
    data = write_features(tmp_path / "data")
    _break(data, how)
    out = tmp_path / "run"
    result = run_cli("fit", "--dataset", "features", "--data-root", data, "--out", out)
    assert result.exit_code != 0
    assert expected in flat(result.output)
    assert flat(result.output).count("Error:") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--arch", "resnet8"), "--dataset features has no backbone: leave --arch unset"),
        (("--pretrained",), "--pretrained: --dataset features has no backbone"),
        (("--stage2-mode", "live"), "--stage2-mode cached"),
        (("--val-fraction", "0.2"), None),
    ],
)
def test_options_a_features_run_cannot_take(
    flags: tuple[str, ...], expected: str | None, tmp_path: Path
) -> None:
    data = write_features(tmp_path / "data", val=expected is None)
    out = tmp_path / "run"
    result = run_cli("fit", "--dataset", "features", "--data-root", data, "--out", out, *flags)
    assert result.exit_code != 0
    assert (expected or "ships its own validation split") in flat(result.output)
    assert not out.exists()


def test_predict_and_export_a_features_run(feature_run: Path, tmp_path: Path) -> None:
    data = Path(yaml.safe_load((feature_run / "config.yaml").read_text())["data_root"])
    want = np.load(feature_run / "logits.npy")
    logits = tmp_path / "logits.npy"
    # test_flipped_features.npy beside it: averaged as the run's evaluation did
    ok("predict", feature_run, data / "test_features.npy", "--logits", logits, "--format", "csv")
    np.testing.assert_array_equal(np.load(logits), want)
    alone = tmp_path / "test_features.npy"
    alone.write_bytes((data / "test_features.npy").read_bytes())
    result = ok("predict", feature_run, alone, "--format", "json")
    assert "has no test_flipped_features.npy beside it" in flat(result.output)
    images = run_cli("predict", feature_run, tmp_path)
    assert images.exit_code != 0
    out = tmp_path / "head.pt"
    ok("export", feature_run, "--out", out)
    info = json.loads((tmp_path / "head.pt.json").read_text())
    assert info["input"] == {"kind": "features", "feature_dim": DIM}
    assert info["input_shape"] == ["N", DIM] and "average this module's outputs" in info["note"]
    module = torch.jit.load(out)
    with torch.no_grad():
        plain = module(torch.from_numpy(np.load(data / "test_features.npy")))
        mirror = module(torch.from_numpy(np.load(data / "test_flipped_features.npy")))
    got = ((plain + mirror) / 2).numpy()
    want = want / info["temperature"]  # the calibrated logits: the temperature is folded in
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("garbage", ["1-d", "one-value", "text", "truncated"])
def test_predict_refuses_a_garbage_flipped_features_file(
    garbage: str, feature_run: Path, tmp_path: Path
) -> None:
    """A ``NAME_flipped_features.npy`` beside the features that is no N x D array: one line
    naming it (issue 21: an IndexError traceback)."""
    data = Path(yaml.safe_load((feature_run / "config.yaml").read_text())["data_root"])
    features = tmp_path / "x_features.npy"
    features.write_bytes((data / "test_features.npy").read_bytes())
    mirror = tmp_path / "x_flipped_features.npy"
    if garbage == "1-d":
        np.save(mirror, np.zeros(DIM, np.float32))
    elif garbage == "one-value":
        np.save(mirror, np.float32(1))
    elif garbage == "text":
        mirror.write_text("not an array")
    else:
        np.save(mirror, np.zeros((60, DIM), np.float32))
        mirror.write_bytes(mirror.read_bytes()[:200])
    one_line_error(run_cli("predict", feature_run, features), str(mirror))


def test_predict_refuses_features_that_overflow(feature_run: Path, tmp_path: Path) -> None:
    features = tmp_path / "big.npy"
    np.save(features, np.full((3, DIM), -1e38, np.float32))
    one_line_error(run_cli("predict", feature_run, features), "big.npy row 0", "1e+38")
