"""``lort fit``: the training front-end, end to end on the embedded digits set.

Most tests share two small digits runs (2 + 2 epochs, a fixed delta) made once per module:
``stage1_run`` stops after stage 1, ``full_run`` goes through uninterrupted. Tests that
continue a run copy one of them first, so every test starts from the same files.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import lort
from cli_helpers import flat, ok, run_cli
from conftest import CLASS_TEST, CLASS_TRAIN_MAX, TAIL_RATIO
from lort.config import resolve
from lort.files import atomic_write
from lort.methods import METHODS, rho
from lort.models import ARCHS
from lort.run.fit import FitOptions, fit
from lort.run.folder import STATE, RunFolder

# The small recipe most tests use: 2 stage-1 epochs, 2 stage-2 epochs, a fixed delta
# (no sweep over the delta grid).
SMALL = ("--epochs1", "2", "--epochs2", "2", "--smooth", "0.5")
SMALL_FLAGS: dict[str, Any] = {
    "stage1": {"epochs": 2},
    "stage2": {"epochs": 2},
    "smooth": "0.5",
}
DIGITS_TEST_ROWS = 300  # 30 test images per digit
OUTPUTS = (
    "config.yaml",
    "manifest.json",
    "stage1.ckpt",
    "features/index.json",
    "split_labels.npz",
    "stage2.pt",
    "logits.npy",
    "labels.npy",
    "train_counts.npy",
    "history.csv",
    "report.json",
)


def read_report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text())


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """(mtime_ns, content) of every file in ``folder`` and below it."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temp_files(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp"))


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "stage1"
    result = ok("fit", "--out", out, *SMALL, "--stop-after", "stage1")
    assert "--resume" in flat(result.output)
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "full"
    ok("fit", "--out", out, *SMALL)
    return out


# --------------------------------------------------------------------------------------
# 1. A bare `lort fit`, end to end.


def test_bare_defaults_end_to_end(tmp_path: Path, one_thread: int) -> None:
    run = tmp_path / "run"
    torch.set_num_threads(one_thread)  # as a user's `lort fit` runs
    try:
        result = ok("fit", "--out", run)  # its time is benches/busy_machine.py's to measure
    finally:
        torch.set_num_threads(1)

    for name in OUTPUTS:
        assert (run / name).is_file(), name
    assert temp_files(run) == []

    logits = np.load(run / "logits.npy")
    labels = np.load(run / "labels.npy")
    counts = np.load(run / "train_counts.npy")
    assert logits.dtype == np.float32 and logits.shape == (DIGITS_TEST_ROWS, 10)
    assert np.isfinite(logits).all()
    assert labels.shape == (DIGITS_TEST_ROWS,) and labels.dtype.kind == "i"

    report = read_report(run)
    manifest = json.loads((run / "manifest.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert report["config"] == config
    assert config["dataset"] == "digits-lt" and config["method"] == "lort"
    assert config["arch"] == "small-cnn" and config["smooth"] == "auto"
    assert report["manifest"] == manifest
    assert manifest["test_total"] == DIGITS_TEST_ROWS
    assert len(manifest["kept_sha256"]) == 64
    int(manifest["kept_sha256"], 16)
    assert counts.tolist() == manifest["train_counts"]

    assert report["method"]["name"] == "lort" and report["method"]["target"] == "smooth"
    smooth = report["smooth"]
    assert smooth["mode"] == "auto"
    assert smooth["grid"] == config["smooth_grid"]
    assert smooth["delta"] in smooth["grid"]
    scores = smooth["val_balanced_accuracy"]
    assert len(scores) == len(smooth["grid"])
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[smooth["grid"].index(smooth["delta"])] == max(scores)

    results = report["results"]
    assert results["rows"] == DIGITS_TEST_ROWS and results["num_classes"] == 10
    assert results["overall"]["accuracy"] > 0.5
    assert set(results["groups"]) == {"many", "medium", "few"}
    timings = report["timings"]
    assert set(timings) == {
        *("stage1_s", "stage1_images_per_s", "features_s", "stage2_s", "eval_s"),
        *("baselines_s", "calibration_s"),
    }
    assert timings["stage1_images_per_s"] > 0
    assert report["runtime"]["torch"] == torch.__version__
    assert report["runtime"]["world_size"] == 1
    # What made the numbers: lort and the libraries they depend on.
    assert report["runtime"]["lort"] == lort.__version__
    assert report["runtime"]["numpy"] == np.__version__
    assert report["runtime"]["python"] == platform.python_version()
    assert set(report["files"]) == set(OUTPUTS)

    out = flat(result.stdout)
    assert "overall" in out and f"delta {smooth['delta']}" in out

    analysis_json = tmp_path / "x.json"
    ok(
        "analyze",
        run / "logits.npy",
        "--labels",
        run / "labels.npy",
        "--train-counts",
        run / "train_counts.npy",
        "--json",
        analysis_json,
    )
    analysis = json.loads(analysis_json.read_text())
    assert analysis["rows"] == DIGITS_TEST_ROWS
    assert analysis["overall"]["accuracy"] == results["overall"]["accuracy"]


# --------------------------------------------------------------------------------------
# 2. Every re-training method, on one stage-1 backbone and its feature cache.


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_runs_on_a_resumed_run(name: str, full_run: Path, tmp_path: Path) -> None:
    run = copy_run(full_run, tmp_path / "run")
    before = snapshot(run)
    ok("fit", "--resume", "--out", run, *SMALL, "--method", name)

    report = read_report(run)
    assert report["method"]["name"] == name
    assert report["config"]["method"] == name
    if METHODS[name].target == "smooth":
        assert report["smooth"]["mode"] == "fixed" and report["smooth"]["delta"] == 0.5
    else:
        assert report["smooth"]["mode"] == "unused"
    logits = np.load(run / "logits.npy")
    assert logits.shape == (DIGITS_TEST_ROWS, 10) and np.isfinite(logits).all()
    assert report["results"]["rows"] == DIGITS_TEST_ROWS
    # stage 1 and the feature cache are reused, not recomputed
    after = snapshot(run)
    for name_ in ("stage1.ckpt", "features/index.json", "features/train.npy"):
        assert after[name_] == before[name_], name_
    assert temp_files(run) == []


# --------------------------------------------------------------------------------------
# 3. Resume and kill safety.


def test_resume_after_stage1_matches_uninterrupted(
    stage1_run: Path, full_run: Path, tmp_path: Path
) -> None:
    state = json.loads((stage1_run / STATE).read_text())
    assert state["done"] == ["stage1"]
    assert not (stage1_run / "logits.npy").exists()
    run = copy_run(stage1_run, tmp_path / "run")
    ok("fit", "--resume", "--out", run, *SMALL)
    np.testing.assert_array_equal(np.load(run / "logits.npy"), np.load(full_run / "logits.npy"))
    assert read_report(run)["results"] == read_report(full_run)["results"]
    assert temp_files(run) == []


def test_resume_with_the_printed_command_continues_the_saved_run(
    stage1_run: Path, full_run: Path, tmp_path: Path
) -> None:
    """`--stop-after stage1` prints `lort fit --resume --out DIR`; that command, with no
    other flags, must finish the run it names (its saved config), as if uninterrupted."""
    run = copy_run(stage1_run, tmp_path / "run")
    ok("fit", "--resume", "--out", run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved == yaml.safe_load((full_run / "config.yaml").read_text())
    np.testing.assert_array_equal(np.load(run / "logits.npy"), np.load(full_run / "logits.npy"))


@pytest.mark.parametrize(
    ("flags", "option"),
    [(("--imbalance-ratio", "5"), "imbalance"), (("--arch", "resnet32"), "arch")],
    ids=["imbalance-ratio", "arch"],
)
def test_resume_refuses_options_that_change_the_finished_phases(
    flags: tuple[str, ...], option: str, full_run: Path, tmp_path: Path
) -> None:
    """The backbone and the feature cache were made from one dataset and architecture;
    resuming with another must stop with a clean error naming the option, not train a
    head on features whose rows no longer match the labels (or crash loading weights)."""
    run = copy_run(full_run, tmp_path / "run")
    result = run_cli("fit", "--resume", "--out", run, *SMALL, *flags)
    assert result.exit_code != 0, (
        f"resuming with {' '.join(flags)} succeeded; report accuracy "
        f"{read_report(run)['results']['overall']['accuracy']:.3f}"
    )
    assert option in result.stderr


def test_interrupted_stage1_resumes_from_its_checkpoint(full_run: Path, tmp_path: Path) -> None:
    """A kill in epoch 2 of stage 1 leaves the epoch-1 checkpoint and no temp files;
    --resume continues from it and ends with the logits of an uninterrupted run."""
    out = tmp_path / "run"

    def interrupt(phase: str, step: int, total: int, loss: float, acc: float) -> None:
        if phase == "stage 1" and step > total // 2 + 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(resolve({}, SMALL_FLAGS), FitOptions(out=out), lambda _: None, interrupt)
    assert temp_files(out) == []
    if (out / STATE).exists():
        assert "stage1" not in json.loads((out / STATE).read_text())["done"]
    ckpt = torch.load(out / "stage1.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["state"]["epoch"] == 1
    assert not (out / "features").exists()

    result = fit(
        resolve({}, SMALL_FLAGS),
        FitOptions(out=out, resume=True),
        lambda _: None,
        lambda *a: None,
    )
    assert result.analysis is not None
    np.testing.assert_array_equal(np.load(out / "logits.npy"), np.load(full_run / "logits.npy"))
    assert temp_files(out) == []


def test_atomic_write_leaves_old_file_and_no_temp_on_failure(tmp_path: Path) -> None:
    (tmp_path / STATE).write_text('{"done": []}')  # a run folder: lort writes no other
    folder = RunFolder(tmp_path)
    folder.write_json("report.json", {"a": 1})

    def half_write(f: Any) -> None:
        f.write(b'{"a": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "report.json", half_write)
    assert folder.read_json("report.json") == {"a": 1}
    assert temp_files(tmp_path) == []


def test_written_files_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    (tmp_path / STATE).write_text('{"done": []}')
    old = os.umask(0o022)
    try:
        RunFolder(tmp_path).write_json("report.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------
# 4. Dry run.


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "run"
    result = ok("fit", "--out", run, "--dry-run", "--method", "ce", "--epochs1", "1")
    assert os.listdir(tmp_path) == []  # no run folder, nor the folder above it
    text = flat(result.stderr)
    for part in ("run folder", "digits-lt: 10 classes", f"{DIGITS_TEST_ROWS} test",
                 "stage 1 small-cnn", "stage 2 ce"):  # fmt: skip
        assert part in text, part
    assert "nothing written" in text
    saved = yaml.safe_load(result.stdout)  # the config.yaml the run would save
    assert saved["method"] == "ce" and saved["stage1"]["epochs"] == 1
    # so the same command, without --dry-run, is not refused
    ok("fit", "--out", run, "--method", "ce", "--epochs1", "1", "--stop-after", "stage1")
    assert yaml.safe_load((run / "config.yaml").read_text()) == saved


def test_auto_smooth_carves_a_validation_split_when_none_is_asked(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "images"
    for label, (name, n_train, n_test) in enumerate((("a", 20, 4), ("b", 10, 4), ("c", 5, 4))):
        for split, n in (("train", n_train), ("test", n_test)):
            (root / split / name).mkdir(parents=True)
            for k in range(n):
                Image.new("RGB", (8, 8), (80 * label, 3 * k, 0)).save(
                    root / split / name / f"{k:02d}.png"
                )
    run = tmp_path / "run"
    result = ok("fit", "--out", run, "--dataset", "imagefolder", "--data-root", root, "--dry-run")
    assert "validation split" in flat(result.stderr)
    assert yaml.safe_load(result.stdout)["val_fraction"] == 0.2
    assert ", 0 val," not in flat(result.stderr) and " val, " in flat(result.stderr)


# --------------------------------------------------------------------------------------
# 5. Existing run folders.


def test_existing_run_folder_is_refused_and_left_alone(full_run: Path, tmp_path: Path) -> None:
    run = copy_run(full_run, tmp_path / "run")
    before = snapshot(run)
    result = run_cli("fit", "--out", run, *SMALL)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--resume" in lines[0] and "--overwrite" in lines[0]
    assert result.stdout == ""
    assert snapshot(run) == before


def test_overwrite_replaces_the_run_folder(full_run: Path, tmp_path: Path) -> None:
    run = copy_run(full_run, tmp_path / "run")
    before = snapshot(run)
    ok("fit", "--out", run, "--overwrite", "--dry-run", "--seed", "3")
    assert snapshot(run) == before  # a dry run replaces nothing
    ok("fit", "--out", run, "--overwrite", "--seed", "3", "--epochs1", "1",
       "--stop-after", "stage1")  # fmt: skip
    assert sorted(os.listdir(run)) == ["config.yaml", "manifest.json", "stage1.ckpt", "state.json"]
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 3


def test_empty_existing_folder_is_used(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    ok("fit", "--out", run, "--dry-run")
    assert os.listdir(run) == []  # a dry run leaves it as it was, not removed
    ok("fit", "--out", run, "--epochs1", "1", "--stop-after", "stage1")
    assert (run / "manifest.json").is_file()


def test_resume_needs_a_run_folder(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = run_cli("fit", "--resume", "--out", other)
    assert result.exit_code != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not a lort run folder" in result.stderr
    assert os.listdir(other) == ["notes.txt"]

    result = run_cli("fit", "--resume", "--out", tmp_path / "missing")
    assert result.exit_code != 0
    assert "nothing to resume" in result.stderr
    assert not (tmp_path / "missing").exists()


# --------------------------------------------------------------------------------------
# 6. Bad input: one clean error, no traceback, no run folder left behind.

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")

BAD_INPUT = [
    pytest.param(("--method", "nope"), ["'nope'", *METHODS], id="method"),
    pytest.param(("--arch", "nope"), ["'nope'", *ARCHS], id="arch"),
    pytest.param(("--arch", "nope", "--dry-run"), ["'nope'", *ARCHS], id="arch-dry-run"),
    pytest.param(
        ("--dataset", "nope"),
        ["'nope'", "digits-lt", "cifar10-lt", "cifar100-lt", "imagefolder", "inat2018"],
        id="dataset",
    ),
    pytest.param(
        ("--dataset", "cifar10-lt", "--data-root", "/nonexistent"),
        ["/nonexistent/cifar-10-batches-py/data_batch_1", "--data-root", "--download"],
        id="cifar-root",
    ),
    pytest.param(("--smooth", "1.5"), ["--smooth", "1.5"], id="smooth-range"),
    pytest.param(("--smooth", "abc"), ["--smooth", "'abc'"], id="smooth-text"),
    pytest.param(("--val-fraction", "1.5"), ["val-fraction", "1.5"], id="val-fraction"),
    pytest.param(("--lr1", "0"), ["lr > 0"], id="lr"),
    pytest.param(("--device", "cuda"), ["CUDA"], id="cuda", marks=NO_CUDA),
]


@pytest.mark.parametrize(("flags", "expected"), BAD_INPUT)
def test_bad_input_is_one_clean_error(
    flags: tuple[str, ...], expected: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = run_cli("fit", "--out", out, *flags)
    assert result.exit_code != 0, result.output
    for part in expected:
        assert part in result.stderr, part
    assert not out.exists(), f"bad input left a run folder behind: {sorted(os.listdir(out))}"
    assert result.stderr.startswith("Error:"), result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("method: ce\nbogus_key: 3\n", "bogus_key"),
        ("stage2:\n  epoch: 3\n", "epoch"),
        ("- a list\n", "mapping"),
        ("method: [unclosed\n", "not valid YAML"),
    ],
    ids=["unknown-key", "unknown-stage-key", "not-a-mapping", "bad-yaml"],
)
def test_bad_config_file_is_one_clean_error(text: str, expected: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    out = tmp_path / "run"
    result = run_cli("fit", "--config", config, "--out", out)
    assert result.exit_code != 0
    assert result.stderr.startswith("Error:") and expected in result.stderr
    assert not out.exists()


# --------------------------------------------------------------------------------------
# 7. Config file and flags.


def test_config_file_with_flag_override(tmp_path: Path) -> None:
    config = tmp_path / "fit.yaml"
    config.write_text("method: ce\nseed: 7\nstage2:\n  epochs: 3\n  lr: 0.01\n")
    run = tmp_path / "run"
    saved = yaml.safe_load(ok("fit", "--config", config, "--epochs2", "5", "--out", run,
                              "--dry-run").stdout)  # fmt: skip
    assert saved["method"] == "ce" and saved["seed"] == 7
    assert saved["stage2"] == {"epochs": 5, "lr": 0.01, "weight_decay": 0.0, "batch_size": 64}
    assert saved["stage1"] == {"epochs": 30, "lr": 0.05, "weight_decay": 5e-4, "batch_size": 64}
    assert saved["dataset"] == "digits-lt" and saved["arch"] == "small-cnn"


# --------------------------------------------------------------------------------------
# 8. A fixed delta with a weak target ratio.


def test_low_rho_warning_is_printed_and_recorded(full_run: Path, tmp_path: Path) -> None:
    run = copy_run(full_run, tmp_path / "run")
    result = ok("fit", "--resume", "--out", run, *SMALL[:4], "--smooth", "0.98")
    text = flat(result.stderr)
    assert "note:" in text and "rho" in text and "1.20" in text
    report = read_report(run)
    assert report["smooth"]["mode"] == "fixed" and report["smooth"]["delta"] == 0.98
    assert math.isclose(report["smooth"]["rho"], rho(10, 0.98))
    assert len(report["notes"]) == 1
    assert "1.20" in report["notes"][0] and "auto" in report["notes"][0]


def test_no_warning_for_a_strong_target(full_run: Path) -> None:
    assert read_report(full_run)["notes"] == []


# --------------------------------------------------------------------------------------
# 9. Live stage 2.


@pytest.mark.parametrize("bn", ["eval", "train"])
def test_live_stage2(bn: str, full_run: Path, tmp_path: Path) -> None:
    run = copy_run(full_run, tmp_path / "run")
    before = snapshot(run)
    ok(
        "fit",
        "--resume",
        "--out",
        run,
        "--epochs1",
        "2",
        "--stage2-mode",
        "live",
        "--live-bn",
        bn,
        "--epochs2",
        "1",
        "--smooth",
        "0.3",
    )
    report = read_report(run)
    assert report["config"]["stage2_mode"] == "live" and report["config"]["live_bn"] == bn
    logits = np.load(run / "logits.npy")
    assert logits.shape == (DIGITS_TEST_ROWS, 10) and np.isfinite(logits).all()
    assert report["results"]["rows"] == DIGITS_TEST_ROWS
    # the stage-1 checkpoint is what stage 1 left, whatever BatchNorm did in stage 2
    assert snapshot(run)["stage1.ckpt"] == before["stage1.ckpt"]


# --------------------------------------------------------------------------------------
# 10. imagefolder on real CIFAR-10 JPEGs.


def test_imagefolder_on_cifar10_jpegs(small_cifar_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok(
        "fit",
        "--dataset",
        "imagefolder",
        "--data-root",
        small_cifar_folder,
        "--arch",
        "resnet32",
        "--epochs1",
        "1",
        "--epochs2",
        "1",
        "--smooth",
        "0.5",
        "--batch1",
        "64",
        "--out",
        run,
    )
    logits = np.load(run / "logits.npy")
    assert logits.shape == (10 * CLASS_TEST, 10) and np.isfinite(logits).all()
    report = read_report(run)
    assert report["manifest"]["split_rule"] == "natural"
    assert report["manifest"]["train_counts"][0] == CLASS_TRAIN_MAX
    assert report["manifest"]["train_counts"][-1] == CLASS_TRAIN_MAX // int(TAIL_RATIO)
    assert report["flip_tta"] is True
    assert report["results"]["rows"] == 10 * CLASS_TEST


def test_the_run_keeps_its_training_history(tmp_path: Path) -> None:
    """history.csv: a row per stage-1 epoch (kept across a resume) and per stage-2 epoch of
    the kept head; the stage-1 rows match the checkpoint's record."""
    import csv

    run = tmp_path / "run"
    ok("fit", "--out", run, "--epochs1", "2", "--epochs2", "3", "--stop-after", "stage1")
    ok("fit", "--resume", "--out", run, "--epochs1", "2", "--epochs2", "3")
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    stage1 = [r for r in rows if r["stage"] == "stage1"]
    stage2 = [r for r in rows if r["stage"] == "stage2"]
    assert [int(r["epoch"]) for r in stage1] == [1, 2]
    assert [int(r["epoch"]) for r in stage2] == [1, 2, 3]
    assert all(0 < float(r["train_loss"]) < 10 and 0 <= float(r["train_accuracy"]) <= 1
               for r in stage1)  # fmt: skip
    assert float(stage1[1]["lr"]) == pytest.approx(0.0, abs=1e-12)  # the cosine's end
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in stage2)
    saved = torch.load(run / "stage1.ckpt", weights_only=True)["state"]["history"]
    assert [r["loss"] for r in saved] == [float(r["train_loss"]) for r in stage1]


def test_every_splits_labels_are_saved_beside_the_feature_cache(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ok("fit", "--out", run, "--epochs1", "1", "--epochs2", "1", "--smooth", "0.5")
    with np.load(run / "split_labels.npz") as z:
        labels = {k: z[k] for k in z.files}
    rows = {k: len(np.load(run / "features" / f"{k}.npy")) for k in ("train", "val", "test")}
    assert set(labels) == {"train", "val", "test"}
    assert all(len(labels[s]) == rows[s] for s in labels)
    np.testing.assert_array_equal(labels["test"], np.load(run / "labels.npy"))
    np.testing.assert_array_equal(np.bincount(labels["train"]), np.load(run / "train_counts.npy"))
