"""Nothing lost, nothing silently wrong: run folders under mistakes, damage and a busy machine.

Each numbered section is one way, found by a hostile but fair user, in which an earlier lort
lost a user's files, printed a wrong number, or crashed with a traceback. The fault-injection
test at the end damages every file of a finished run in turn: the command must then rebuild
what it can (and give the undamaged run's numbers) or stop with one line naming the file.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cli_helpers import flat, ok, one_line_error, run_cli
from lort.run.folder import LOCK, RUN_FILES, STATE

SMALL = ("--epochs1", "2", "--epochs2", "2", "--smooth", "0.5")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished small digits run, compared on two methods (the shared protocol: its points
    are stored and checked by the same code as the others', in a fraction of the time)."""
    run = tmp_path_factory.mktemp("safety") / "run"
    ok("fit", "--out", run, *SMALL)
    ok("compare", run, "--protocol", "shared", "--methods", "ce,lort")
    return run


def contents(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative path -> bytes)."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def report(run: Path) -> dict[str, Any]:
    return json.loads((run / "report.json").read_text())


# --------------------------------------------------------------------------------------
# 1. A rejected --resume changes nothing, and a config.yaml that no longer matches stage 1
#    is refused instead of giving another run's numbers.


def test_rejected_resume_leaves_the_run_as_it_was(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    before = contents(run)
    result = run_cli("fit", "--resume", "--out", run, "--seed", "1")
    one_line_error(result, "--resume cannot change", "seed")
    assert contents(run) == before
    ok("fit", "--resume", "--out", run)  # the run still resumes as it is
    assert report(run)["results"] == report(finished)["results"]


def test_a_config_edited_away_from_stage_1_is_refused(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["seed"] = 1
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for args in (("compare", run, "--methods", "ce"), ("sweep", run, "--smooth", "0.5")):
        one_line_error(run_cli(*args), "config.yaml", "seed")


# --------------------------------------------------------------------------------------
# 2. --overwrite removes only a lort run, and only what lort wrote.


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("x")
    before = contents(folder)
    result = run_cli("fit", "--out", folder, "--overwrite", "--dry-run")
    one_line_error(result, "not a lort run folder")
    assert contents(folder) == before and (folder / "sub").is_dir()


def test_overwrite_refuses_a_run_holding_other_files(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    (run / "figures").mkdir(exist_ok=True)
    (run / "figures" / "my-plot.svg").write_text("<svg/>")
    before = contents(run)
    result = run_cli("fit", "--out", run, "--overwrite", "--dry-run")
    one_line_error(result, "notes.txt", "figures/my-plot.svg")
    assert contents(run) == before


def test_overwrite_replaces_what_lort_wrote(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    before = contents(run)
    ok("fit", "--out", run, "--overwrite", "--dry-run")
    assert contents(run) == before  # a dry run checks, and replaces nothing
    ok("fit", "--out", run, "--overwrite", "--epochs1", "1", "--stop-after", "stage1")
    assert sorted(p.name for p in run.iterdir()) == [
        "config.yaml",
        "manifest.json",
        "stage1.ckpt",
        STATE,
    ]


# --------------------------------------------------------------------------------------
# 3 and 4. Damaged files: a one-line error naming the file, or a rebuild with a note.


def overwrite_middle(path: Path, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = bytes((b + 1) % 256 for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


def test_damaged_checkpoint_is_refused_everywhere(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    overwrite_middle(run / "stage1.ckpt")
    for args in (
        ("fit", "--resume", "--out", run),
        ("compare", run, "--methods", "ce"),
        ("sweep", run, "--smooth", "0.5"),
    ):
        one_line_error(run_cli(*args), "stage1.ckpt", "damaged", "--overwrite")


def test_truncated_checkpoint_is_one_line(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    ckpt = run / "stage1.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    one_line_error(run_cli("fit", "--resume", "--out", run), "stage1.ckpt")


@pytest.mark.parametrize("damage", ["truncate", "garble", "delete"])
def test_feature_cache_is_rebuilt(damage: str, finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    cache = run / "features" / "train.npy"
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[:100])
    elif damage == "garble":
        overwrite_middle(cache)
    else:
        cache.unlink()
    # compare cannot rebuild it (that needs the backbone): it says how
    one_line_error(run_cli("compare", run, "--methods", "ce"), "features/train.npy", "--resume")
    result = ok("fit", "--resume", "--out", run)
    squeezed = "".join(result.stderr.split())  # long paths wrap anywhere
    assert "features/train.npy" in squeezed and "rebuilding" in squeezed
    assert report(run)["results"] == report(finished)["results"]
    ok("compare", run, "--methods", "ce")


@pytest.mark.parametrize("text", ["", '{"done": ["stage1", "feat'], ids=["empty", "truncated"])
def test_damaged_state_is_one_line(text: str, finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    (run / STATE).write_text(text)
    one_line_error(run_cli("fit", "--resume", "--out", run), "state.json", "--overwrite")
    one_line_error(run_cli("compare", run, "--methods", "ce"), "state.json")


# --------------------------------------------------------------------------------------
# 5. lort analyze reads regular files only (a FIFO used to hang in open).


def test_analyze_refuses_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "f.npy"
    os.mkfifo(fifo)
    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(3, dtype=np.int64))
    cmd = [sys.executable, "-m", "lort", "analyze", str(fifo), "--labels", str(labels)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "not a regular file" in done.stderr and "Traceback" not in done.stderr
    logits = tmp_path / "logits.npy"
    np.save(logits, np.zeros((3, 2), dtype=np.float32))
    one_line_error(run_cli("analyze", logits, "--labels", fifo), "labels", "not a regular file")


# --------------------------------------------------------------------------------------
# 6. Wrong types in a config file: one line per wrong key.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("seed: abc\n", "seed must be an integer, got 'abc'"),
        ("stage1:\n  epochs: ten\n", "stage1.epochs must be an integer, got 'ten'"),
        ("stage1: 5\n", "stage1 must be a mapping"),
        ("imbalance_ratio: [1, 2]\n", "imbalance_ratio must be a number"),
        ('val_fraction: "0.2"\n', "val_fraction must be a number, got '0.2'"),
        ("smooth_grid: 0.5\n", "smooth_grid must be a list of numbers"),
    ],
)
def test_wrong_config_types_are_one_line_each(text: str, expected: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    out = tmp_path / "run"
    result = run_cli("fit", "--config", config, "--out", out)
    one_line_error(result, f"{config}: {expected}")
    assert not out.exists()


def test_every_wrong_key_gets_its_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("seed: abc\nflip_tta: 3\n")
    result = run_cli("fit", "--config", config, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "seed must be" in result.stderr and "flip_tta must be" in result.stderr


# --------------------------------------------------------------------------------------
# 7. --out paths that cannot be made.


def test_out_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    one_line_error(run_cli("fit", "--out", tmp_path / "file" / "run", "--dry-run"), "--out")
    result = run_cli("fit", "--out", tmp_path / "file", "--dry-run")  # click's own check
    assert result.exit_code == 2 and "is a file" in result.stderr


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs a folder nobody may write (/sys)")
def test_out_where_nothing_may_be_written() -> None:
    one_line_error(run_cli("fit", "--out", "/sys/lort-test-run", "--dry-run"), "--out")


# --------------------------------------------------------------------------------------
# 8. Settings that used to fail only after stage 1 now fail before anything is written.


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--lr1", "nan"), "lr > 0"),
        (("--lr1", "inf"), "finite"),
        (("--lr2", "nan"), "stage2"),
        (("--wd1", "inf"), "finite"),
        (("--tau", "nan"), "--tau"),
        (("--tau", "1e308"), "--tau must be 'auto' or a number in [0, 10]"),
        (("--tau", "-1"), "--tau must be 'auto' or a number in [0, 10]"),
        (("--epochs2", "0"), "--epochs2 0 trains no stage-2 classifier"),
        (("--imbalance-ratio", "1e9"), "at most"),
        (("--imbalance-ratio", "inf"), "--imbalance-ratio"),
    ],
)
def test_bad_settings_fail_before_stage_1(
    flags: tuple[str, ...], expected: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    started = time.perf_counter()
    one_line_error(run_cli("fit", "--out", out, *SMALL, *flags), expected)
    assert time.perf_counter() - started < 20  # no training happened
    assert not out.exists()


def test_a_corrupt_image_fails_before_the_run_folder_exists(
    small_cifar_folder: Path, tmp_path: Path
) -> None:
    root = copy(small_cifar_folder, tmp_path / "images")
    first = sorted((root / "train" / "cat").iterdir())[0]
    first.write_bytes(b"not a jpeg")
    out = tmp_path / "run"
    args = ("fit", "--out", out, "--dataset", "imagefolder", "--data-root", root)
    one_line_error(run_cli(*args, "--arch", "resnet8", "--epochs1", "1"), first.name)
    assert not out.exists()
    first.unlink()  # the user removes the broken file: the same --out works
    ok(*args, "--arch", "resnet8", "--dry-run")


# --------------------------------------------------------------------------------------
# 9. Temp files left by a kill are removed by the next writer.


def test_leftover_temp_files_are_removed_on_resume(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    (run / "keep.tmp").write_text("not lort's")
    point = run / "compare" / ".ce-seed0.json.lort-0123456789abcdef.tmp"
    point.write_bytes(b"half")
    result = ok("compare", run, "--methods", "ce")
    assert not point.exists() and "temp file" in flat(result.stdout)
    report_tmp = run / ".report.json.lort-fedcba9876543210.tmp"
    report_tmp.write_bytes(b"half")
    result = ok("fit", "--resume", "--out", run)
    assert not report_tmp.exists() and "temp file" in flat(result.stderr)
    assert (run / "keep.tmp").read_text() == "not lort's"


# --------------------------------------------------------------------------------------
# 10. One writer per run folder.


def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK).write_text(f"{sleeper.pid}\n")
        before = contents(run)
        for args in (("fit", "--resume", "--out", run), ("compare", run, "--methods", "ce")):
            one_line_error(run_cli(*args), "in use", str(sleeper.pid))
        assert contents(run) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    result = ok("compare", run, "--methods", "ce")  # the process is gone: its lock is stale
    assert "took over" in flat(result.stdout + result.stderr)
    assert not (run / LOCK).exists()


def test_two_fits_into_one_folder_do_not_interleave(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lort", "fit", "--out", str(out), *SMALL, "--threads", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], results
    loser = next(err for p, (_, err) in zip(procs, results, strict=True) if p.returncode == 1)
    assert "Traceback" not in loser and ("in use" in loser or "already exists" in loser)
    state = json.loads((out / STATE).read_text())
    assert state["done"] == ["stage1", "features"] and not (out / LOCK).exists()


# --------------------------------------------------------------------------------------
# 11. Threads: the choice is printed and can be set.


def test_threads_are_printed_and_can_be_set(tmp_path: Path) -> None:
    result = ok("fit", "--out", tmp_path / "run", "--dry-run", "--threads", "1")
    assert "threads 1 (torch intra-op)" in flat(result.stderr)
    bad = run_cli("fit", "--out", tmp_path / "run2", "--dry-run", "--threads", "0")
    assert bad.exit_code == 2 and not (tmp_path / "run2").exists()


# --------------------------------------------------------------------------------------
# Fault injection: every file of a finished run, damaged in turn.

DAMAGES = ("garble", "truncate", "delete")


def damage(path: Path, how: str) -> None:
    if how == "garble":
        overwrite_middle(path)
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()


def targets(run: Path) -> list[str]:
    return sorted(
        str(p.relative_to(run))
        for p in run.rglob("*")
        if p.is_file() and not p.name.endswith(".png")
    )


@pytest.fixture(scope="module")
def clean_numbers(finished: Path) -> dict[str, Any]:
    return {
        "fit": report(finished)["results"],
        "compare": json.loads((finished / "compare-shared-ce_lort.json").read_text())["rows"],
    }


def test_fault_injection_covers_every_file(finished: Path) -> None:
    assert set(targets(finished)) >= {
        STATE,
        *RUN_FILES,
        "compare-shared-ce_lort.json",
        "compare-shared-ce_lort.csv",
        "compare/ce-seed0.json",
        "compare/lort-seed0.json",
    }


def an_edit(run: Path, clean: Path, name: str) -> bool:
    """Whether damaged ``name`` is a config.yaml that still reads as a config whose stage 2
    differs from the clean run's: config.yaml is the user's to edit (checked by content), so
    a cut at a line boundary (dropping, say, the stage2 block) is an edit lort honours."""
    if name != "config.yaml":
        return False
    damaged = yaml.safe_load((run / name).read_text()) or {}
    return damaged != yaml.safe_load((clean / name).read_text()) and "stage2" not in damaged


@pytest.mark.parametrize("how", DAMAGES)
def test_fault_injection(
    how: str, finished: Path, clean_numbers: dict[str, Any], tmp_path: Path
) -> None:
    """Each file damaged alone: compare, then fit --resume, either succeed with the clean
    run's numbers (having rebuilt what they need) or stop with one line naming the file."""
    for i, name in enumerate(targets(finished)):
        run = copy(finished, tmp_path / f"run{i}")
        damage(run / name, how)
        base = Path(name).name
        result = run_cli("compare", run, "--protocol", "shared", "--methods", "ce,lort")
        if result.exit_code == 0:
            rows = json.loads((run / "compare-shared-ce_lort.json").read_text())["rows"]
            assert rows == clean_numbers["compare"] or an_edit(run, finished, name), (name, how)
        else:
            one_line_error(result, base if base != "config.yaml" or how != "garble" else "")
        result = run_cli("fit", "--resume", "--out", run, *SMALL)
        if result.exit_code == 0:
            assert report(run)["results"] == clean_numbers["fit"], (name, how)
        else:
            one_line_error(result)
            assert base in result.stderr or "config" in result.stderr, (name, how, result.stderr)


# --------------------------------------------------------------------------------------
# 12. A full disk is one line naming the file lort was writing, not torch's
#     "[enforce fail at inline_container.cc]" or numpy's "No space left on device" alone.


class FullDisk(io.FileIO):
    """A file on a disk with no space left: every write fails as the kernel's does."""

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_disk_for(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes of ``name`` (lort's temp file beside it) fail with ENOSPC."""
    import builtins

    import lort.files

    def opener(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if f".{name}.lort-" in str(path):
            return FullDisk(path, mode.replace("b", ""))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(lort.files, "open", opener, raising=False)


def test_a_full_disk_while_writing_the_checkpoint_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_disk_for("stage1.ckpt", monkeypatch)
    out = tmp_path / "run"
    one_line_error(
        run_cli("fit", "--out", out, *SMALL), str(out / "stage1.ckpt"), "No space left on device"
    )
    assert not [p for p in out.iterdir() if ".lort-" in p.name]  # no temp file left behind


@pytest.mark.parametrize("writer", ["write_npy", "write_json", "save_torch"])
def test_every_writer_names_the_file_a_full_disk_refused(
    writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lort.files
    from lort.errors import FileWriteError

    fill_disk_for("out.bin", monkeypatch)
    value: Any = {"a": [1, 2]} if writer == "write_json" else np.zeros(1000, np.float32)
    if writer == "save_torch":
        import torch

        value = {"w": torch.zeros(10_000)}
    with pytest.raises(FileWriteError, match="No space left on device") as e:
        getattr(lort.files, writer)(tmp_path / "out.bin", value)
    assert str(tmp_path / "out.bin") in str(e.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# 13. lort installed without an extra: the command says which extra to install, in one
#     line, before anything is written (a ModuleNotFoundError traceback before).


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("torch", ("fit", "--out", "OUT"), "lort fit needs torch, which is not installed"),
        ("torchvision", ("fit", "--out", "OUT"), "needs torchvision"),
        ("sklearn", ("fit", "--out", "OUT"), "needs scikit-learn"),
        ("yaml", ("fit", "--out", "OUT"), "needs pyyaml"),
        ("matplotlib", ("fit", "--out", "OUT"), "pip install 'lort[plot]'"),
        ("torch", ("predict", "OUT", "OUT"), "lort predict needs torch"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    module: str, args: tuple[str, ...], extra: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = [a.replace("OUT", str(out)) for a in args] + ["--epochs1", "1", "--epochs2", "1"][
        : 4 if args[0] == "fit" else 0
    ]
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from lort.cli import main\n"
        f"main({argv!r}, prog_name='lort')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 1, done.stderr
    # Off a terminal a progress line may come first on a slow start; the error is one line.
    beat = re.compile(r"^lort \w+ [\d.]+ s: ")
    lines = [line for line in done.stderr.splitlines() if line.strip() and not beat.match(line)]
    assert len(lines) == 1 and lines[0].startswith("Error:"), done.stderr
    assert extra in lines[0] and "pip install 'lort[" in lines[0], lines[0]
    assert not out.exists()
