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
# 1. No state.json, no run: every reader refuses, and nothing is written.


def test_a_run_without_state_json_is_read_by_no_command(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    (run / STATE).unlink()
    garble(run / "stage2.pt")  # printed logits of ~3e26 with rc 0 before
    before = contents(run)
    for what, args in readers(run, tmp_path).items():
        result = run_cli(*args)
        one_line_error(result, "state.json")
        assert "not a lort run" in result.stderr, what
        assert contents(run) == before, what
    with pytest.raises(InputError, match="not a lort run"):
        lort.open_run(run)
    assert contents(run) == before and not (tmp_path / "model.pt").exists()


@pytest.mark.parametrize("name", ["stage2.pt", "report.json", "logits.npy"])
def test_a_file_the_record_does_not_hold_is_refused(
    name: str, finished: Path, tmp_path: Path
) -> None:
    run = copy(finished, tmp_path / "run")
    st = state(run)
    del st["files"][name]
    (run / STATE).write_text(json.dumps(st))
    args = {
        "stage2.pt": ("predict", run, tmp_path / "x.npy"),
        "report.json": ("compare", run, "--methods", "ce", "--protocol", "shared"),
        "logits.npy": ("analyze", run / "logits.npy", "--labels", run / "labels.npy"),
    }[name]
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
    before = contents(run)
    one_line_error(run_cli(*args), name, "not in the run's record")
    assert contents(run) == before
    ok("fit", "--resume", "--out", run)  # makes it again, recorded
    ok(*args)


# --------------------------------------------------------------------------------------
# 2. The outputs of one stage 2 land together: an interrupted write is refused whole.


def fail_at_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing report.json fails (a full disk, a kill): what was written before it stays."""
    real = files.write_json

    def write_json(path: Any, data: Any, *rest: Any) -> files.Written:
        if Path(path).name == "report.json":
            raise OSError(28, "No space left on device", str(path))
        return real(path, data, *rest)

    monkeypatch.setattr(files, "write_json", write_json)


def refused_until_resumed(run: Path, tmp_path: Path) -> None:
    args = readers(run, tmp_path)
    for what in ("predict", "export", "compare", "keep"):
        one_line_error(run_cli(*args[what]), "did not finish", f"lort fit --resume --out {run}")
    result = run_cli("analyze", run / "logits.npy", "--labels", run / "labels.npy")
    one_line_error(result, "logits.npy", "did not finish")
    with pytest.raises(InputError, match="did not finish"):
        lort.open_run(run)


def test_an_interrupted_fit_stage2_leaves_no_mixed_outputs(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy(finished, tmp_path / "run")
    with monkeypatch.context() as m:
        fail_at_report(m)
        result = run_cli("fit", "--resume", "--out", run, "--method", "ce")
        one_line_error(result, "No space left")
    # CE's logits and head were written beside LORT's report.json
    assert json.loads((run / "report.json").read_text())["method"]["name"] == "lort"
    assert (run / "logits.npy").read_bytes() != (finished / "logits.npy").read_bytes()
    refused_until_resumed(run, tmp_path)
    ok("fit", "--resume", "--out", run, "--method", "ce")
    assert "writing" not in state(run)
    assert json.loads((run / "report.json").read_text())["method"]["name"] == "ce"
    ok("predict", run, tmp_path / "inputs.npy")
    ok("analyze", run / "logits.npy", "--labels", run / "labels.npy")


def test_an_interrupted_keep_leaves_no_mixed_outputs(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy(finished, tmp_path / "run")
    with monkeypatch.context() as m:
        fail_at_report(m)
        one_line_error(run_cli(*readers(run, tmp_path)["keep"]), "No space left")
    refused_until_resumed(run, tmp_path)
    ok("fit", "--resume", "--out", run)
    ok(*readers(run, tmp_path)["keep"])
    assert json.loads((run / "report.json").read_text())["method"]["name"] == "ce"


# --------------------------------------------------------------------------------------
# 3. A kill between a rename and its record: the record still vouches for the file.

KILL_AT = """
import os, sys
from pathlib import Path
import lort.files
from lort.cli import main
name, nth, before = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "before"
real, seen = os.replace, []
def replace(src, dst):
    if not before:
        real(src, dst)
    if Path(dst).name == name:
        seen.append(dst)
        if len(seen) == nth:
            os._exit(137)  # SIGKILL: no cleanup runs
    if before:
        real(src, dst)
lort.files.os.replace = replace
main(sys.argv[4:])
"""


def killed_at_rename(name: str, nth: int, when: str, *args: str | Path) -> None:
    """``lort ARGS`` in a process killed just ``when`` ("before", "after") the ``nth`` rename
    onto ``name``."""
    cmd = [sys.executable, "-c", KILL_AT, name, str(nth), when, *map(str, args)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 137, done.stderr


def test_a_kill_between_the_rename_and_the_record_keeps_the_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # killed after stage 1's second checkpoint (epoch 2) is renamed, before it is recorded
    killed_at_rename("stage1.ckpt", 2, "after", "fit", "--out", run, *SMALL, "--threads", "1")
    recorded = state(run)["files"]["stage1.ckpt"]
    assert files.digest(run / "stage1.ckpt").sha256 != recorded["sha256"]  # the epoch-1 one
    result = ok("fit", "--resume", "--out", run)
    assert "took over the lock" in result.stdout + result.stderr
    assert state(run)["done"] == ["stage1", "features"]
    assert files.digest(run / "stage1.ckpt").sha256 == state(run)["files"]["stage1.ckpt"]["sha256"]


def test_a_kill_between_the_manifests_record_and_its_rename_can_be_resumed(
    tmp_path: Path,
) -> None:
    """The pending record of a manifest that never reached its name: refused for ever before."""
    run = tmp_path / "run"
    killed_at_rename("manifest.json", 1, "before", "fit", "--out", run, *SMALL, "--threads", "1")
    assert not (run / "manifest.json").exists()
    assert "pending" in state(run)["files"]["manifest.json"]
    ok("fit", "--resume", "--out", run, *SMALL)
    assert state(run)["files"]["manifest.json"]["size"] > 0


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
