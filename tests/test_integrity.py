"""A run's record is the only way in (issue 21): a folder without ``state.json``, or a file it
does not record, is read by no command; the outputs of one stage 2 land together or are all
refused; a kill between a rename and its record leaves a file the record still vouches for; a
resumed run never takes another split for its own; ``lort analyze RUN/logits.npy`` checks the
run's record. Each test fails on the lort before its fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lort
from cli_helpers import ok, one_line_error, run_cli
from lort import files
from lort.errors import InputError
from lort.run.folder import STATE

SMALL = ("--epochs1", "2", "--epochs2", "2", "--smooth", "0.5")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished small digits run (method lort), compared (tuned) on ce and lort."""
    run = tmp_path_factory.mktemp("integrity") / "run"
    ok("fit", "--out", run, *SMALL)
    ok("compare", run, "--methods", "ce,lort")
    return run


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def state(run: Path) -> dict[str, Any]:
    return json.loads((run / STATE).read_text())


def garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes((b + 1) % 256 for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


def readers(run: Path, tmp_path: Path) -> dict[str, tuple[Any, ...]]:
    """Every command that reads a finished run."""
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, np.zeros((2, 1, 8, 8), np.float32))
    return {
        "compare": ("compare", run, "--methods", "ce", "--protocol", "shared"),
        "sweep": ("sweep", run, "--smooth", "0.5"),
        "keep": ("keep", run, "--methods", "ce,lort", "--method", "ce"),
        "predict": ("predict", run, inputs),
        "export": ("export", run, "--out", tmp_path / "model.pt"),
        "fit": ("fit", "--resume", "--out", run),
    }


# --------------------------------------------------------------------------------------
# 4. A resumed run keeps its manifest: another split, or a damaged manifest, is refused.


def features_data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for split, per in (("train", [30, 12, 5]), ("test", [8, 8, 8])):
        y = np.repeat(np.arange(3), per)
        np.save(root / f"{split}_features.npy", rng.normal(size=(y.size, 8)).astype(np.float32))
        np.save(root / f"{split}_labels.npy", y)
    return root


@pytest.fixture
def stage1_run(tmp_path: Path) -> tuple[Path, Path]:
    data = features_data(tmp_path / "data")
    run = tmp_path / "run"
    ok("fit", "--dataset", "features", "--data-root", data, "--out", run, "--stop-after", "stage1")
    return run, data


def test_resume_refuses_a_changed_split(stage1_run: tuple[Path, Path]) -> None:
    run, data = stage1_run
    labels = np.load(data / "train_labels.npy")
    labels[0], labels[-1] = labels[-1], labels[0]  # the training set changed
    np.save(data / "train_labels.npy", labels)
    before = contents(run)
    for extra in ((), ("--dry-run",)):
        result = run_cli("fit", "--resume", "--out", run, *extra)
        one_line_error(result, "manifest.json", "another split", "--overwrite")
    assert contents(run) == before  # the manifest stage 1 was trained on is kept


def test_resume_refuses_a_damaged_manifest(stage1_run: tuple[Path, Path]) -> None:
    run, _ = stage1_run
    garble(run / "manifest.json")
    before = contents(run)
    one_line_error(run_cli("fit", "--resume", "--out", run), "manifest.json", "--overwrite")
    assert contents(run) == before


def test_resume_does_not_rewrite_the_manifest(stage1_run: tuple[Path, Path]) -> None:
    run, _ = stage1_run
    before = (run / "manifest.json").stat().st_mtime_ns, (run / "manifest.json").read_bytes()
    ok("fit", "--resume", "--out", run)
    after = (run / "manifest.json").stat().st_mtime_ns, (run / "manifest.json").read_bytes()
    assert after == before


# --------------------------------------------------------------------------------------
# 5. lort analyze RUN/logits.npy is checked against the run's record.


@pytest.mark.parametrize("name", ["logits.npy", "labels.npy", "train_counts.npy"])
def test_analyze_checks_a_run_file_against_its_record(
    name: str, finished: Path, tmp_path: Path
) -> None:
    run = copy(finished, tmp_path / "run")
    if name == "logits.npy":
        garble(run / name)
    else:  # values that still read as labels and counts: only the record tells
        a = np.load(run / name)
        np.save(run / name, np.roll(a, 1) if name == "labels.npy" else a + 1)
    args = ("analyze", run / "logits.npy", "--labels", run / "labels.npy")
    result = run_cli(*args, "--train-counts", run / "train_counts.npy")
    one_line_error(result, name, "damaged")
    plain = tmp_path / "elsewhere"  # the same bytes outside a run: taken as they are
    plain.mkdir()
    for f in ("logits.npy", "labels.npy", "train_counts.npy"):
        shutil.copy(finished / f, plain / f)
    ok("analyze", plain / "logits.npy", "--labels", plain / "labels.npy")
