"""A run folder, or a file handed to lort, that a user has turned against lort (issue 28): links
where lort writes, pipes and devices where it reads, JSON and arrays of shapes lort never
writes. Each case failed on the lort before it: it wrote through a link, hung, deleted a user's
file, or ended in a traceback; now it is one line and nothing of the user's changes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import flat, ok, one_line_error, run_cli
from lort.errors import InputError
from lort.run.folder import LOCK, STATE, locked

SMALL = ("--epochs1", "2", "--epochs2", "2", "--smooth", "0.5")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("hostile-run") / "run"
    ok("fit", "--out", run, *SMALL)
    return run


@pytest.fixture(scope="module")
def compared(finished: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = copy(finished, tmp_path_factory.mktemp("compared") / "run")
    ok("compare", run, "--methods", "ce")
    return run


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def lort(
    *args: str | Path, timeout: float = 120, memory: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``lort ARGS`` in a child process. A hang fails the test after ``timeout`` seconds
    (some ten times what a refusal takes on an idle machine: a loaded one needs several
    times that) rather than hang the suite; with ``memory``, the child's data is limited to
    that many bytes, so that a case which grows fails alone rather than take the machine's
    memory."""
    import resource

    def limited() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))

    cmd = [sys.executable, "-m", "lort", *map(str, args)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=limited
    )


def one_line(done: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("Error:"), done.stderr
    for part in parts:
        assert part in flat(last), (part, last)


# --------------------------------------------------------------------------------------
# 1. The lock: never through a link (it truncated the file it led to), never a FIFO (it hung).


def test_a_lock_linked_to_a_users_file_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    bashrc = tmp_path / "bashrc"
    bashrc.write_text("export PATH=$HOME/bin:$PATH\n")
    (run / LOCK).symlink_to(bashrc)
    with pytest.raises(InputError, match="is a symbolic link"), locked(run, print):
        pass
    assert bashrc.read_text() == "export PATH=$HOME/bin:$PATH\n"


# Every command that takes the lock (fit --resume, compare, sweep, keep): each truncated a
# linked lock's target and wrote its pid there; a FIFO lock hung compare.
LOCKING = {
    "fit": ("fit", "--resume", "--out", "RUN", *SMALL),
    "compare": ("compare", "RUN", "--methods", "ce"),
    "sweep": ("sweep", "RUN", "--smooth", "0,0.5"),
    "keep": ("keep", "RUN", "--methods", "ce"),
}


def locking(command: str, run: Path) -> list[str | Path]:
    return [run if a == "RUN" else a for a in LOCKING[command]]


@pytest.mark.parametrize("command", LOCKING)
def test_no_command_writes_through_a_linked_lock(
    command: str, finished: Path, tmp_path: Path
) -> None:
    run = copy(finished, tmp_path / "run")
    bashrc = tmp_path / "bashrc"
    bashrc.write_text("export PATH=$HOME/bin:$PATH\n")
    (run / LOCK).symlink_to(bashrc)
    one_line_error(run_cli(*locking(command, run)), LOCK, "symbolic link")
    assert bashrc.read_text() == "export PATH=$HOME/bin:$PATH\n"


@pytest.mark.parametrize("command", ["fit", "compare"])
def test_a_lock_that_is_a_fifo_is_refused_at_once(
    command: str, finished: Path, tmp_path: Path
) -> None:
    run = copy(finished, tmp_path / "run")
    os.mkfifo(run / LOCK)
    one_line(lort(*locking(command, run)), LOCK, "named pipe")


# --------------------------------------------------------------------------------------
# 2. What lort reads in a run: a FIFO state.json hung `fit --resume`; a link or device is no
#    file of lort's.


def test_a_fifo_state_json_does_not_hang_a_resume(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    (run / STATE).unlink()
    os.mkfifo(run / STATE)
    one_line(lort("fit", "--resume", "--out", run, *SMALL), STATE, "named pipe")


@pytest.mark.parametrize("name", ["report.json", "labels.npy"])
def test_a_run_file_linked_elsewhere_is_not_read(name: str, finished: Path, tmp_path: Path) -> None:
    """The link leads to a copy of the very file: lort still reads nothing through it."""
    run = copy(finished, tmp_path / "run")
    shutil.move(run / name, tmp_path / name)
    (run / name).symlink_to(tmp_path / name)
    one_line_error(run_cli("compare", run, "--methods", "ce"), name, "symbolic link")


@pytest.mark.parametrize("command", ["fit", "keep"])
def test_a_linked_figures_folder_is_refused_before_anything_is_deleted(
    command: str, compared: Path, tmp_path: Path
) -> None:
    """fit --resume and keep deleted the user's reliability.png through the link."""
    run = copy(compared, tmp_path / "run")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "reliability.png").write_bytes(b"my own figure")
    shutil.rmtree(run / "figures", ignore_errors=True)
    (run / "figures").symlink_to(mine, target_is_directory=True)
    args = locking(command, run) + (["--method", "ce"] if command == "fit" else [])
    result = run_cli(*args)
    assert result.exit_code == 1
    assert f"{run / 'figures'} is a symbolic link" in flat(result.output)
    assert (mine / "reliability.png").read_bytes() == b"my own figure"
    assert "writing" not in json.loads((run / STATE).read_text())


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_pipes_and_devices_given_by_path_are_named_as_such(
    kind: str, finished: Path, tmp_path: Path
) -> None:
    """A symbolic link to /dev/zero, or a FIFO: "no such file" before."""
    given = tmp_path / "rows.npy"
    if kind == "fifo":
        os.mkfifo(given)
    else:
        given.symlink_to("/dev/zero")
    word = "named pipe" if kind == "fifo" else "a device"
    one_line_error(run_cli("predict", finished, given), str(given), word)
    data = tmp_path / "features"
    data.mkdir()
    np.save(data / "train_labels.npy", np.zeros(4, np.int64))
    np.save(data / "test_features.npy", np.zeros((4, 3), np.float32))
    np.save(data / "test_labels.npy", np.zeros(4, np.int64))
    (data / "train_features.npy").symlink_to(given)
    args = ("fit", "--dataset", "features", "--data-root", data, "--out", tmp_path / "r")
    one_line(lort(*args, "--dry-run"), "train_features.npy", word)


def test_a_fifo_config_file_does_not_hang_fit(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    os.mkfifo(config)
    done = lort("fit", "--config", config, "--out", tmp_path / "r", "--dry-run")
    one_line(done, "config file", "named pipe")


# --------------------------------------------------------------------------------------
# 3. JSON lort reads: bounded in depth and size, of the shape lort writes (a depth bomb was a
#    RecursionError, a list where a mapping belongs an AttributeError).

BOMB = "[" * 100_000 + "]" * 100_000


def restamp(run: Path, name: str) -> None:
    """Make state.json vouch for ``name`` as it is now (a user who knows the format)."""
    import hashlib

    state = json.loads((run / STATE).read_text())
    data = (run / name).read_bytes()
    state["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (run / STATE).write_text(json.dumps(state))


@pytest.mark.parametrize(
    "text", [BOMB, '{"done": [], "files": []}', '{"done": [], "files": {"a": [1]}}']
)
def test_a_hostile_state_json_is_one_line(text: str, finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    (run / STATE).write_text(text)
    one_line_error(run_cli("fit", "--resume", "--out", run, *SMALL), STATE, "damaged")
    one_line_error(run_cli("compare", run, "--methods", "ce"), STATE, "damaged")


@pytest.mark.parametrize("text", [BOMB, '{"method": ["lort"]}', "[1, 2]"])
def test_a_hostile_report_json_is_one_line(text: str, finished: Path, tmp_path: Path) -> None:
    import lort

    run = copy(finished, tmp_path / "run")
    (run / "report.json").write_text(text)
    restamp(run, "report.json")
    with pytest.raises(lort.LortError, match=r"report\.json is damaged") as caught:
        lort.open_run(run)
    assert "\n" not in str(caught.value)


POINT = "compare/ce-seed0-protocol-tuned.json"


@pytest.mark.parametrize("damage", ["0.9", [0.9], {"all": 0.9}, None, "depth bomb"])
def test_a_compare_point_of_another_shape_is_measured_again_or_refused(
    damage: object, compared: Path, tmp_path: Path
) -> None:
    """A point whose numbers are strings, lists or mappings (its fingerprint intact, its record
    restamped) was reused as "a mapping": compare printed or summed what it held. Now it is
    damaged: compare measures it again, keep refuses it in one line."""
    from lort.experiments.points import RESULT_SHAPE

    run = copy(compared, tmp_path / "run")
    point = json.loads((run / POINT).read_text())
    good = point["result"]["test"]["all"]
    point["result"]["test"]["all" if damage is not None else "few"] = damage
    if damage is None:  # a group's accuracy may be None, but the group's class count may not
        point["result"]["test"]["classes_few"] = None
    (run / POINT).write_text(BOMB if damage == "depth bomb" else json.dumps(point))
    restamp(run, POINT)
    one_line_error(run_cli("keep", run, "--methods", "ce"), POINT, "damaged")
    assert "re-trained" in flat(ok("compare", run, "--methods", "ce").output)
    again = json.loads((run / POINT).read_text())["result"]
    assert again["test"]["all"] == good
    assert isinstance(again["test"]["classes_few"], int)
    assert {k.removeprefix("?") for k in RESULT_SHAPE} >= set(again)  # every key it writes


def test_read_json_bounds_size_depth_and_shape(tmp_path: Path) -> None:
    from lort import files
    from lort.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH

    p = tmp_path / "x.json"
    shape = {"a": [int], "?b": {"*": str}}
    p.write_text('{"a": [1, 2], "b": {"x": "y"}, "c": null}')
    assert files.read_json(p, shape)["a"] == [1, 2]
    for text, why in [
        ('{"a": [1, true]}', "a[1] is True, where lort writes an integer"),
        ('{"a": [1], "b": {"x": 3}}', "b.x is 3, where lort writes a string"),
        ('{"b": {}}', "has no 'a'"),
        ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "nested deeper"),
        ("1" + " " * MAX_JSON_BYTES, "larger than"),
    ]:
        p.write_text(text)
        with pytest.raises(ValueError, match=re.escape(why)):
            files.read_json(p, shape)


def alias_bomb(levels: int = 9) -> str:
    """ "Billion laughs": each anchor repeats the one before nine times (9^9 strings expanded)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + f"\nsmooth_grid: [*a{levels - 1}]\n"


YAML_BOMBS = {
    "aliases": (alias_bomb(), "more than 10,000 values"),
    "depth": ("x: " + BOMB + "\n", "deeper than 32 levels"),
    "self": ("a: &a [1, *a]\n", "alias to a value that contains it"),
}


@pytest.mark.parametrize("kind", YAML_BOMBS)
def test_a_yaml_bomb_config_is_refused_before_it_expands(kind: str, tmp_path: Path) -> None:
    """The alias bomb was a MemoryError traceback (repr of the expanded value in the type
    check, after gigabytes), the depth bomb a RecursionError in PyYAML's composer."""
    text, why = YAML_BOMBS[kind]
    config = tmp_path / "bomb.yaml"
    config.write_text(text)
    done = lort("fit", "--config", config, "--dry-run", "--out", tmp_path / "r", memory=4 << 30)
    one_line(done, str(config), why)


def test_a_resumed_run_whose_config_yaml_is_a_bomb_is_one_line(
    finished: Path, tmp_path: Path
) -> None:
    run = copy(finished, tmp_path / "run")
    (run / "config.yaml").write_text(alias_bomb())
    restamp(run, "config.yaml")
    before = (run / "stage2.pt").read_bytes()
    done = lort("fit", "--resume", "--out", run, *SMALL, memory=4 << 30)
    one_line(done, "config.yaml", "10,000")
    assert (run / "stage2.pt").read_bytes() == before


def test_a_config_with_a_few_aliases_still_loads(tmp_path: Path) -> None:
    from lort.config import MAX_CONFIG_NODES, load_yaml

    config = tmp_path / "c.yaml"
    config.write_text("stage1: &s {epochs: 2, lr: 0.1}\nstage2: *s\nsmooth_grid: [0.1, 0.5]\n")
    assert load_yaml(config)["stage2"] == {"epochs": 2, "lr": 0.1}
    # values: the mapping, its key, the list and the list's items
    config.write_text("smooth_grid: [" + "0.5, " * (MAX_CONFIG_NODES - 4) + "0.5]\n")
    assert len(load_yaml(config)["smooth_grid"]) == MAX_CONFIG_NODES - 3
    config.write_text("smooth_grid: [" + "0.5, " * (MAX_CONFIG_NODES - 3) + "0.5]\n")
    with pytest.raises(InputError, match="more than 10,000 values"):
        load_yaml(config)


# --------------------------------------------------------------------------------------
# 4. Arrays: an .npz where an .npy belongs, labels beyond int64, a planted pickle.


def zip_bomb(path: Path) -> None:
    """An .npz whose one member inflates to 64 MiB, saved under an .npy name."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.save(buf, np.zeros(1 << 23))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("arr_0.npy", buf.getvalue())


def feature_folder(root: Path, train_labels: np.ndarray) -> Path:
    root.mkdir()
    n = len(train_labels)
    np.save(root / "train_features.npy", np.ones((n, 3), np.float32))
    np.save(root / "train_labels.npy", train_labels)
    np.save(root / "test_features.npy", np.ones((2, 3), np.float32))
    np.save(root / "test_labels.npy", np.zeros(2, np.int64))
    return root


def dry_fit(data: Path, out: Path) -> object:
    return run_cli("fit", "--dataset", "features", "--data-root", data, "--out", out, "--dry-run")


def test_an_archive_where_an_npy_belongs_is_one_line(finished: Path, tmp_path: Path) -> None:
    given = tmp_path / "rows.npy"
    zip_bomb(given)
    one_line_error(run_cli("predict", finished, given), str(given), "zip archive")
    data = feature_folder(tmp_path / "data", np.array([0, 1, 0, 1]))
    zip_bomb(data / "train_features.npy")
    one_line_error(dry_fit(data, tmp_path / "r"), "train_features.npy", "zip archive")


@pytest.mark.parametrize("top", [2**63, 2**64 - 1])
def test_unsigned_labels_beyond_int64_are_one_line(top: int, tmp_path: Path) -> None:
    data = feature_folder(tmp_path / "data", np.array([0, 1, top, 1], np.uint64))
    one_line_error(dry_fit(data, tmp_path / "r"), "train_labels.npy", str(top))


def test_a_label_beyond_the_training_rows_is_one_line(tmp_path: Path) -> None:
    """K = largest label + 1, every class needing a training sample: a label of 10^12 would
    size the classes before anything said no."""
    data = feature_folder(tmp_path / "data", np.array([0, 1, 10**12, 1], np.int64))
    one_line_error(dry_fit(data, tmp_path / "r"), "train_labels.npy", "only 4 rows")


def test_a_header_claiming_billions_of_rows_costs_no_memory(tmp_path: Path) -> None:
    """2^31 + 1 labels on a sparse file: read whole (16 GiB of int64) before the row count
    was checked, or numpy's ArrayMemoryError. Mapped now (a shared file mapping, outside the
    4 GiB data limit the command runs under), and refused by its count."""
    logits, labels = tmp_path / "logits.npy", tmp_path / "labels.npy"
    np.save(logits, np.zeros((3, 2), np.float32))
    np.lib.format.open_memmap(labels, mode="w+", dtype=np.int64, shape=(2**31 + 1,)).flush()
    done = lort("analyze", logits, "--labels", labels, memory=4 << 30)
    one_line(done, "3 rows", "2147483649 labels")


def test_a_planted_pickle_as_weights_is_one_line(tmp_path: Path) -> None:
    import torch

    from lort.models.weights import read_state_dict

    weights = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(2), "x": {"obj": InputError("planted")}}, weights)
    with pytest.raises(InputError, match="never loads") as caught:
        read_state_dict(weights)
    assert "\n" not in str(caught.value) and "weights_only=False" not in str(caught.value)


def test_open_run_on_a_file_says_it_is_not_a_directory(tmp_path: Path) -> None:
    import lort

    given = tmp_path / "report.json"
    given.write_text("{}")
    with pytest.raises(lort.InputError, match="not a directory"):
        lort.open_run(given)


# --------------------------------------------------------------------------------------
# 5. The Python API and the environment take the CLI's bounds.


@pytest.mark.parametrize("threads", [100_000, -1, 0])
def test_the_api_bounds_threads_like_the_cli(threads: int) -> None:
    import lort

    z, y = np.zeros((4, 3), np.float32), np.zeros(4, np.int64)
    with pytest.raises(lort.InputError, match="between 1 and 1,024"):
        lort.analyze(z, y, threads=threads)
    with pytest.raises(lort.InputError, match="between 1 and 1,024"):
        lort.curvature(z, threads=threads)


def test_lort_num_threads_is_bounded_for_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    import lort

    monkeypatch.setenv("LORT_NUM_THREADS", "100000")
    with pytest.raises(lort.InputError, match="LORT_NUM_THREADS"):
        lort.analyze(np.zeros((4, 3), np.float32), np.zeros(4, np.int64))


def test_the_api_bounds_seeds_and_grids_like_the_cli(finished: Path) -> None:
    import lort

    run = lort.open_run(finished)
    with pytest.raises(lort.InputError, match=r"^seeds must be between 1 and 1,000"):
        run.compare(seeds=10**8)  # named as the API spells it (the CLI says --seeds)
    with pytest.raises(lort.InputError, match=r"^protocol must be one of"):
        run.compare(protocol="best")
    with pytest.raises(lort.InputError, match="at most 1,000"):
        run.sweep(smooth=[0.5] * 1001)


# --------------------------------------------------------------------------------------
# 6. Intervals that say when they cannot be computed; a run pooled once.


def test_no_interval_from_too_few_or_equal_differences() -> None:
    from lort.experiments.intervals import t_interval

    for values in ([-0.1199, -0.1199], [0.05, 0.05, 0.05, 0.05], [0.1, 0.3]):
        iv = t_interval(values)
        assert iv is not None and iv.low is None and not iv.significant, values
        assert iv.why is not None and "too few" in iv.why
    iv = t_interval([0.1, 0.12, 0.11])
    assert iv is not None and iv.low is not None and iv.significant


def test_a_run_pooled_twice_is_refused(finished: Path, tmp_path: Path) -> None:
    (tmp_path / "again").symlink_to(finished, target_is_directory=True)
    one_line_error(run_cli("compare", finished, finished), "given twice")
    one_line_error(run_cli("compare", finished, tmp_path / "again"), "one run")


def test_the_best_seed_is_shown_with_its_own_settings() -> None:
    """paper-test-selected prints the best seed's accuracy: the settings beside it are that
    seed's, not the first seed's."""
    from collections import defaultdict
    from types import SimpleNamespace

    from rich.console import Console

    from lort.cli.tables import print_compare

    row: dict = defaultdict(lambda: {"mean": None, "std": None})
    row.update(
        method="ce",
        seeds=[0, 1],
        delta=[None, None],
        epoch=[3, 17],
        chosen=[{"lr": 0.5, "weight_decay": 0.25}, {"lr": 0.0625, "weight_decay": 0.125}],
        best_trial={"seed": 1, "all": 0.9, "many": 0.9, "medium": 0.9, "few": 0.9},
        formula="",
        paper=None,
        delta_from=None,
    )
    test = {f"classes_{g}": 1 for g in ("many", "medium", "few")}
    res = SimpleNamespace(
        seeds=[0, 1],
        run=SimpleNamespace(root=Path("run")),
        label="paper-test-selected",
        protocol="paper-test-selected",
        rows=[row],
        methods=["ce"],
        points={"ce": [{"test": test}]},
        notes=[],
        select_on=None,
        stop="last",
        pooled=None,
    )
    console = Console(record=True, width=300)
    print_compare(console, res)  # type: ignore[arg-type]
    line = next(x for x in console.export_text().splitlines() if x.startswith("│ ce"))
    assert "lr 0.0625" in line and "wd 0.125" in line and "17" in line, line
    assert "lr 0.5" not in line and " 3 " not in line, line


# --------------------------------------------------------------------------------------
# 7. A reader never takes half of a write; a run missing its record or its options is no run.


def test_a_run_written_while_predict_reads_it_is_refused(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lort keep` switching heads between predict's reads of stage2.pt and report.json: the
    head of one stage 2 beside another's report, silently, before."""
    from lort.errors import DamagedFileError
    from lort.run import trained
    from lort.run.folder import RunFolder

    run = copy(finished, tmp_path / "run")
    real = RunFolder.load_npy

    def keep_writes_meanwhile(self: RunFolder, name: str, *args: bool) -> np.ndarray:
        out = real(self, name, *args)
        report = json.loads((run / "report.json").read_text())
        RunFolder(run).write_json("report.json", report | {"notes": ["kept another head"]})
        return out

    monkeypatch.setattr(RunFolder, "load_npy", keep_writes_meanwhile)
    with pytest.raises(DamagedFileError, match="while this one read it"):
        trained.open_trained(run)
    monkeypatch.setattr(RunFolder, "load_npy", real)
    assert trained.open_trained(run).num_classes == 10  # whole again once written


def test_resume_without_config_yaml_refuses_rather_than_change_the_method(
    finished: Path, tmp_path: Path
) -> None:
    run = copy(finished, tmp_path / "run")
    (run / "config.yaml").unlink()
    before = (run / "stage2.pt").read_bytes()
    one_line_error(run_cli("fit", "--resume", "--out", run, *SMALL), "config.yaml is missing")
    assert (run / "stage2.pt").read_bytes() == before


def test_a_run_file_without_state_json_gives_no_numbers(finished: Path, tmp_path: Path) -> None:
    run = copy(finished, tmp_path / "run")
    (run / STATE).unlink()
    logits = np.load(run / "logits.npy")
    np.save(run / "logits.npy", logits[:, ::-1].copy())  # damaged: no record says so now
    result = run_cli("analyze", run / "logits.npy", "--labels", run / "labels.npy")
    one_line_error(result, "not a lort run", STATE)


def test_a_file_lort_cannot_read_never_advises_overwrite(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--overwrite would delete a healthy run whose file is merely unreadable to this user."""
    from lort import files
    from lort.errors import DamagedFileError
    from lort.run.folder import RunFolder

    def denied(path: object, **_: object) -> files.Written:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files, "digest", denied)
    with pytest.raises(DamagedFileError, match="Permission denied") as caught:
        RunFolder(finished).verify("manifest.json")
    assert "--overwrite" not in str(caught.value)


def test_a_name_outside_the_run_is_never_read(finished: Path) -> None:
    """A compare table names its points' files: a name leading out of the run is refused."""
    from lort.run.folder import RunFolder

    for name in ("../run/report.json", str(finished / "report.json")):
        with pytest.raises(InputError, match="no file of a run folder"):
            RunFolder(finished).read_json(name)
