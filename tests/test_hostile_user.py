"""What a hostile user's files and options must not do (issue 21): run code, reach the
terminal as escape sequences, make lort delete or overwrite what is not its own, or grow
without bound. Each section is one way an earlier lort gave in; the test fails on that lort.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cli_helpers import flat, ok, one_line_error, run_cli
from lort.run.folder import STATE

SMALL = ("--epochs1", "2", "--epochs2", "2", "--smooth", "0.5")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished small digits run."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    ok("fit", "--out", run, *SMALL)
    return run


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# --------------------------------------------------------------------------------------
# 1. Files are data: a pickle that would run code is refused, not loaded.


class Payload:
    """Unpickled, this creates ``marker`` (as any code a pickle runs could)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def restamp(run: Path, name: str, how: str) -> None:
    """Make state.json agree with ``name`` as it is now: record its new size and sha256, or
    drop its record (which lort then refuses to read)."""
    state = json.loads((run / STATE).read_text())
    if how == "restamped":
        data = (run / name).read_bytes()
        state["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    else:
        del state["files"][name]
    (run / STATE).write_text(json.dumps(state))


def plant(run: Path, name: str, marker: Path, how: str) -> None:
    """Add a payload to the checkpoint ``name`` of ``run``, keeping all it held."""
    saved = torch.load(run / name, weights_only=True)
    saved["config" if name == "stage1.ckpt" else "method_extra"] = {"x": Payload(marker)}
    torch.save(saved, run / name)
    restamp(run, name, how)


def commands(run: Path, tmp_path: Path) -> dict[str, tuple[Any, ...]]:
    images = tmp_path / "images.npy"
    np.save(images, np.zeros((2, 1, 8, 8), np.float32))
    return {
        "predict": ("predict", run, images),
        "export": ("export", run, "--out", tmp_path / "model.pt"),
        "compare": ("compare", run, "--methods", "ce", "--protocol", "shared"),
        "fit": ("fit", "--resume", "--out", run),
    }


@pytest.mark.parametrize("how", ["restamped", "unrecorded"])
@pytest.mark.parametrize("name", ["stage1.ckpt", "stage2.pt"])
def test_a_checkpoint_that_would_run_code_is_refused(
    name: str, how: str, finished: Path, tmp_path: Path
) -> None:
    run = copy(finished, tmp_path / "run")
    marker = tmp_path / "marker"
    plant(run, name, marker, how)
    readers = ("predict", "export") + (("compare", "fit") if name == "stage1.ckpt" else ())
    for what, args in commands(run, tmp_path).items():
        result = run_cli(*args)
        assert not marker.exists(), f"lort {what} ran the code in {name}"
        if what in readers:  # an unrecorded file is not read at all (issue 21)
            one_line_error(result, name, "never loads" if how == "restamped" else "record")
        # (compare and fit --resume do not read stage2.pt: fit makes it again)


def cifar_files(root: Path, payload_in: str | None, marker: Path) -> Path:
    """A tiny CIFAR-10 layout; ``payload_in`` holds a payload instead of its batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = list(range(10)) * 2
        batch: dict[str, Any] = {
            "batch_label": name,
            "data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
            "labels": labels,
        }
        if name == payload_in:
            batch["labels"] = [Payload(marker)]
        (folder / name).write_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
    meta = {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": 20}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path: Path) -> None:
    from lort.data.cifar import load_cifar_splits
    from lort.errors import InputError

    marker = tmp_path / "marker"
    cifar_files(tmp_path / "root", "data_batch_3", marker)
    with pytest.raises(InputError, match=r"data_batch_3 is not a CIFAR pickle.*never loads"):
        load_cifar_splits("cifar10-lt", tmp_path / "root", download=False)
    assert not marker.exists()
    out = tmp_path / "run"
    args = ("fit", "--dataset", "cifar10-lt", "--data-root", tmp_path / "root", "--out", out)
    one_line_error(run_cli(*args, "--dry-run"), "data_batch_3", "never loads")
    assert not marker.exists() and not out.exists()


def test_cifar_batches_as_numpy_1_under_python_2_wrote_them_still_load(tmp_path: Path) -> None:
    """The real files name numpy.core (numpy 1), not numpy._core; protocol 5 (the fakes) and
    protocol 2 (Python 3's bytes via _codecs.encode) load as well."""
    from lort.data.cifar import load_cifar_splits, read_pickle

    folder = cifar_files(tmp_path / "root", None, tmp_path / "marker")
    batch = {"data": np.arange(6, dtype=np.uint8).reshape(1, 6), "raw": b"\x00\xff", "n": 3}
    old = pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray\n_reconstruct" in old and b"_codecs" in old
    (folder / "old").write_bytes(old)
    got = read_pickle(folder / "old")
    np.testing.assert_array_equal(got["data"], batch["data"])
    assert got["raw"] == batch["raw"] and got["n"] == 3
    splits = load_cifar_splits("cifar10-lt", tmp_path / "root", download=False)
    assert splits.train_images.shape == (100, 32, 32, 3) and splits.class_names[9] == "c9"


# --------------------------------------------------------------------------------------
# 2. What a user's strings hold reaches the terminal as text: no escape sequence, no markup.

EVIL = "\x1b[31mred\x1b]0;title\x07[/red][bold]\u202eb"


def test_printable_and_shown() -> None:
    from rich.console import Console

    from lort.cli.terminal import printable, shown

    assert printable(EVIL) == "\\x1b[31mred\\x1b]0;title\\x07[/red][bold]\\u202eb"
    assert printable("a\nb\tc") == "a\\nb\\tc"
    assert printable("a\nb\x1b", newlines=True) == "a\nb\\x1b"
    assert printable("café ✓ 猫") == "café ✓ 猫"  # printable text is left alone
    console = Console(force_terminal=True, color_system=None, width=200)
    with console.capture() as captured:
        console.print(shown(EVIL))
    assert captured.get().strip() == printable(EVIL)


def renamed_classes(finished: Path, tmp_path: Path) -> Path:
    """A copy of the run whose first class is named EVIL (as class_names.txt or a folder name
    of an image folder would name it), state.json agreeing."""
    run = copy(finished, tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["class_names"] = [EVIL] * len(manifest["class_names"])
    (run / "manifest.json").write_text(json.dumps(manifest))
    restamp(run, "manifest.json", "restamped")
    return run


def test_class_names_reach_the_terminal_escaped(finished: Path, tmp_path: Path) -> None:
    from lort.cli.terminal import printable

    run = renamed_classes(finished, tmp_path)
    images = tmp_path / f"in{EVIL.replace('/', '')}.npy"  # the input's name is shown too
    np.save(images, np.zeros((2, 1, 8, 8), np.float32))
    for fmt in ("table", "csv"):
        result = ok("predict", run, images, "--top-k", "1", "--format", fmt)
        for text in (result.stdout, result.stderr):
            assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
        if fmt == "csv":
            assert printable(EVIL) in result.stdout and printable(images.name) in result.stdout
        else:  # the table's cell is cut at its width
            assert "\\x1b[31mred\\x1b]0;title\\x07[/red]" in result.stdout
    out = tmp_path / "pred.csv"  # a file keeps the names as they are
    ok("predict", run, images, "--top-k", "1", "--format", "csv", "--out", out)
    assert EVIL in out.read_text()


def test_user_strings_in_errors_reach_the_terminal_escaped(finished: Path) -> None:
    result = run_cli("predict", finished, f"/nowhere/{EVIL}.jpg")
    one_line_error(result, "no such file or folder", "\\x1b[31mred")
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr


# --------------------------------------------------------------------------------------
# 3. --overwrite never follows a symbolic link: one in the run is refused before anything is
#    removed, and what it points to is never touched.


@pytest.mark.parametrize(
    ("link", "command"),
    [("compare", ("compare", "--methods", "ce")), ("figures", ("compare",)),
     ("sweep", ("sweep", "--smooth", "0,0.5"))],
)  # fmt: skip
def test_nothing_is_written_through_a_linked_folder(
    link: str, command: tuple[str, ...], finished: Path, tmp_path: Path
) -> None:
    """compare/, sweep/ or figures/ made a link to a folder of the user's: lort writes
    nothing there (nor anywhere else) and says so in one line."""
    run = copy(finished, tmp_path / "run")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    if (run / link).exists():
        shutil.rmtree(run / link)
    (run / link).symlink_to(mine, target_is_directory=True)
    name, *rest = command
    result = run_cli(name, run, *rest)
    assert result.exit_code != 0
    assert f"{run / link} is a symbolic link" in flat(result.output)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "link", ["figures", "compare", "report.json", "compare/ce-seed0.json", "figures/a.png"]
)
def test_overwrite_refuses_a_run_holding_a_link(link: str, finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "ce-seed0.json").write_text("my notes")
    (mine / "a.png").write_bytes(b"my picture")
    (run / link).parent.mkdir(exist_ok=True)
    if (run / link).is_dir():  # figures/ of a calibrated run: the link replaces it
        shutil.rmtree(run / link)
    (run / link).unlink(missing_ok=True)  # report.json: the link replaces lort's file
    (run / link).symlink_to(mine if link in ("figures", "compare") else mine / "ce-seed0.json")
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    listing = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    one_line_error(run_cli("fit", "--out", run, "--overwrite", "--dry-run"), link, "link")
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == before
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == listing


def test_leftover_temp_files_are_not_looked_for_through_a_link(
    finished: Path, tmp_path: Path
) -> None:
    run = copy(finished, tmp_path / "run")
    mine = tmp_path / "mine"
    mine.mkdir()
    theirs = mine / ".x.json.lort-0123456789abcdef.tmp"  # named like a temp file of lort's
    theirs.write_text("mine")
    (run / "compare").symlink_to(mine)
    run_cli("fit", "--resume", "--out", run, *SMALL)
    assert theirs.read_text() == "mine"


# --------------------------------------------------------------------------------------
# 4. An output path never names a file of a run (the run given, or another), links followed.


def test_outputs_that_name_a_runs_own_files_are_refused(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    images = tmp_path / "images.npy"
    np.save(images, np.zeros((2, 1, 8, 8), np.float32))
    (tmp_path / "link.npy").symlink_to(run / "logits.npy")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for args, named in (
        (("export", run, "--out", run / "stage1.ckpt"), "stage1.ckpt"),
        (("export", run, "--out", run / "report"), "report.json"),  # its JSON beside
        (("export", finished, "--out", run / "stage2.pt"), "stage2.pt"),  # another run's
        (("predict", run, images, "--logits", run / "manifest.json"), "manifest.json"),
        (("predict", run, images, "--format", "csv", "--out", run / "config.yaml"), "config"),
        (("predict", run, images, "--logits", tmp_path / "link.npy"), "logits.npy"),
        (("predict", run, images, "--logits", run / "compare" / "ce-seed0.json"), "compare/"),
        (("analyze", run / "logits.npy", "--labels", run / "labels.npy", "--json",
          run / "report.json"), "report.json"),
        (("analyze", run / "logits.npy", "--labels", run / "labels.npy", "--train-counts",
          run / "train_counts.npy", "--plot", run / "figures"), "figures/"),
    ):  # fmt: skip
        one_line_error(run_cli(*args), named, "destroy the run")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    ok("export", run, "--out", run / "model.pt")  # a file of the user's beside the run's
    ok("predict", run, images, "--logits", tmp_path / "logits.npy")


# --------------------------------------------------------------------------------------
# 5. Only lort's own temp files (``.NAME.lort-HEX.tmp``) are removed as leftovers of a write.

USERS_TMP = (".notes.tmp", ".report.json.4242.0123abcd.tmp", ".x.lort-abc.tmp", ".y.lort.tmp")


def test_temp_files_of_the_users_are_kept(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    (run / "compare").mkdir()
    for name in USERS_TMP:
        (run / name).write_text("mine")
        (run / "compare" / name).write_text("mine")
    lorts = run / ".report.json.lort-0123456789abcdef.tmp"
    lorts.write_bytes(b"half")
    ok("fit", "--resume", "--out", run, *SMALL)
    for name in USERS_TMP:
        assert (run / name).is_file() and (run / "compare" / name).is_file(), name
        assert (run / name).read_text() == (run / "compare" / name).read_text() == "mine"
    assert not lorts.exists()
    one_line_error(run_cli("fit", "--out", run, "--overwrite", "--dry-run"), ".notes.tmp")
    assert (run / ".notes.tmp").read_text() == "mine"


def test_lorts_temp_files_carry_the_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lort.files import TEMP_FILE, write_text

    renamed: list[str] = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(Path(a).name), real(a, b)))
    write_text(tmp_path / "g.txt", "y")
    assert len(renamed) == 1 and renamed[0].startswith(".g.txt.lort-"), renamed
    assert TEMP_FILE.match(renamed[0]) and (tmp_path / "g.txt").read_text() == "y"


# --------------------------------------------------------------------------------------
# 6. Every count is bounded when the option is read: one line, nothing built or written.


def refused(result: Any, *parts: str) -> None:
    """A usage error (click's, exit 2) or lort's one line (exit 1), naming ``parts``."""
    assert result.exit_code in (1, 2), result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for part in parts:
        assert part in lines[0], (part, lines[0])


def many(n: int, step: float) -> str:
    return ",".join(f"{step * (i + 1):.6g}" for i in range(n))


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("compare", "RUN", "--seeds", "100000000"), "1<=x<=1000"),
        (("analyze", "RUN/logits.npy", "--labels", "RUN/labels.npy", "--threads", "100000"),
         "1<=x<=1024"),
        (("predict", "RUN", "IMAGES", "--top-k", "100000000"), "1<=x<=10000"),
        (("predict", "RUN", "IMAGES", "--batch-size", "100000000"), "1<=x<=65536"),
        (("predict", "RUN", "IMAGES", "--workers", "100000"), "0<=x<=256"),
        (("fit", "--out", "OUT", "--dry-run", "--threads", "100000"), "1<=x<=1024"),
        (("fit", "--out", "OUT", "--dry-run", "--workers", "100000"), "0<=x<=256"),
        (("fit", "--out", "OUT", "--dry-run", "--epochs1", "100000000"), "0<=x<=10000"),
        (("fit", "--out", "OUT", "--dry-run", "--epochs2", "100000000"), "0<=x<=10000"),
        (("fit", "--out", "OUT", "--dry-run", "--batch1", "100000000"), "1<=x<=65536"),
        (("fit", "--out", "OUT", "--dry-run", "--batch2", "100000000"), "1<=x<=65536"),
        (("fit", "--out", "OUT", "--dry-run", "--seed", "-1"), "0<=x<=4294967295"),
        (("fit", "--out", "OUT", "--dry-run", "--seed", "9" * 70), "0<=x<=4294967295"),
        (("fit", "--out", "OUT", "--dry-run", "--config", "CONFIG:seed: -1"),
         "--seed must be between 0 and 4,294,967,295, got -1"),
        (("fit", "--out", "OUT", "--dry-run", "--config", "CONFIG:seed: " + "9" * 70),
         "--seed must be between 0 and 4,294,967,295"),
        (("fit", "--out", "OUT", "--dry-run", "--config", "CONFIG:workers: 100000"),
         "--workers must be between 0 and 256"),
        (("fit", "--out", "OUT", "--dry-run", "--config", "CONFIG:stage1: {epochs: 100000}"),
         "--epochs1 must be between 0 and 10,000"),
        (("fit", "--out", "OUT", "--dry-run", "--config",
          "CONFIG:stage2: {batch_size: 100000000}"),
         "--batch2 must be between 1 and 65,536"),
        (("fit", "--out", "OUT", "--dry-run", "--config",
          f"CONFIG:smooth_grid: [{many(1001, 1e-4)}]"), "at most 1,000"),
        (("sweep", "RUN", "--smooth", many(1001, 1e-4)), "at most 1,000"),
        (("sweep", "RUN", "--lr", many(40, 1e-3), "--wd", many(40, 1e-4)), "1,600 points"),
        (("fit", "--out", "OUT", "--dry-run", "ENV:LORT_NUM_THREADS=100000"),
         "LORT_NUM_THREADS must be between 1 and 1,024"),
        (("analyze", "RUN/logits.npy", "--labels", "RUN/labels.npy", "ENV:LORT_NUM_THREADS=100000"),
         "LORT_NUM_THREADS must be between 1 and 1,024"),
    ],
)  # fmt: skip
def test_counts_are_bounded_up_front(
    args: tuple[str, ...],
    named: str,
    finished: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = copy(finished, tmp_path / "run")
    images = tmp_path / "images.npy"
    np.save(images, np.zeros((2, 1, 8, 8), np.float32))
    out = tmp_path / "out"
    given: list[str] = []
    for a in args:
        if a.startswith("CONFIG:"):
            (tmp_path / "config.yaml").write_text(a.removeprefix("CONFIG:") + "\n")
            given.append(str(tmp_path / "config.yaml"))
        elif a.startswith("ENV:"):
            monkeypatch.setenv(*a.removeprefix("ENV:").split("="))
        else:
            given.append(
                a.replace("RUN", str(run)).replace("OUT", str(out)).replace("IMAGES", str(images))
            )
    before = contents(run)
    refused(run_cli(*given), named)
    assert not out.exists() and contents(run) == before


# --------------------------------------------------------------------------------------
# 7. Taking over a stale lock is exclusive: of commands that find one together, one holds it.


def _hold(root: str, barrier: Any, inside: Any, overlaps: Any, took: Any) -> None:
    import time

    import lort.run.folder
    from lort.errors import InputError
    from lort.run.folder import locked

    alive = lort.run.folder._pid_alive

    def slow_alive(pid: int) -> bool:  # widens the window between reading the lock and acting
        time.sleep(0.02)
        return alive(pid)

    lort.run.folder._pid_alive = slow_alive
    barrier.wait()
    try:
        with locked(Path(root), lambda _: None):
            with inside.get_lock():
                inside.value += 1
                if inside.value > 1:
                    overlaps.value += 1
            time.sleep(0.05)
            with inside.get_lock():
                inside.value -= 1
            with took.get_lock():
                took.value += 1
    except InputError:
        pass


def test_two_commands_never_both_take_over_a_stale_lock(tmp_path: Path) -> None:
    import multiprocessing
    import subprocess
    import sys

    from lort.run.folder import LOCK

    ctx = multiprocessing.get_context("fork")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    inside, overlaps, took = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    rounds, racers = 20, 3
    for _ in range(rounds):
        (tmp_path / LOCK).write_text(f"{dead.pid}\n")
        barrier = ctx.Barrier(racers)
        procs = [
            ctx.Process(target=_hold, args=(str(tmp_path), barrier, inside, overlaps, took))
            for _ in range(racers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    assert overlaps.value == 0, f"{overlaps.value} times two commands held one lock"
    assert took.value >= rounds and not (tmp_path / LOCK).exists()


# --------------------------------------------------------------------------------------
# 8. An empty .npy is one line naming it (numpy's EOFError read to click as an aborted prompt).


def test_an_empty_npy_is_one_line_naming_it(finished: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    one_line_error(run_cli("predict", finished, empty), str(empty), "empty")
    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(3, np.int64))
    logits = tmp_path / "logits.npy"
    np.save(logits, np.zeros((3, 2), np.float32))
    one_line_error(run_cli("analyze", logits, "--labels", empty), str(empty), "empty")
    one_line_error(run_cli("analyze", empty, "--labels", labels), str(empty), "empty")
    features = tmp_path / "features"
    features.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        np.save(features / f"{split}_features.npy", rng.normal(size=(40, 4)).astype(np.float32))
        np.save(features / f"{split}_labels.npy", np.arange(40) % 4)
    (features / "test_features.npy").write_bytes(b"")
    out = tmp_path / "run"
    result = run_cli("fit", "--dataset", "features", "--data-root", features, "--out", out)
    one_line_error(result, "test_features.npy", "empty")
    assert not out.exists()
