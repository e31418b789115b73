"""``lort`` on an interactive terminal: each command run in a child process whose stdin,
stdout and stderr are a real pseudo-terminal, so rich draws its live progress bars (CliRunner
and pipes are not terminals, and there rich turns the bars off). The child's environment has
none of the variables with which rich decides a terminal without looking (FORCE_COLOR,
TTY_COMPATIBLE, TTY_INTERACTIVE, NO_COLOR, ...)."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lort

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")

SMALL = ("--epochs1", "2", "--epochs2", "2", "--smooth", "0.5")
# Variables with which rich (or click) decides whether it writes to a terminal, or its width,
# without asking the file: none may reach the child.
NOT_INHERITED = (
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "NO_COLOR",
    "CI",
    "JUPYTER_COLUMNS",
    "JUPYTER_LINES",
    "LINES",
    "COLUMNS",
    "TERM",
)
HIDE_CURSOR = "\x1b[?25l"  # what rich's live display writes first, on a terminal only
TIMEOUT = 600.0
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    """TEXT without the terminal's escape sequences, each run of whitespace one space."""
    return " ".join(ESCAPE.sub("", text).split())


def on_terminal(*args: str | Path) -> str:
    """``lort ARGS`` in a child process on a pseudo-terminal; all it wrote, once it exits 0."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    package = str(Path(lort.__file__).parent.parent)  # this tree's lort, not an installed one
    env.update(
        TERM="xterm-256color",
        COLUMNS="120",
        PYTHONPATH=os.pathsep.join([package, env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        LORT_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    main, child = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lort", *map(str, args)],
            stdin=child,
            stdout=child,
            stderr=child,
            env=env,
            close_fds=True,
        )
    finally:
        os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"lort {args} still running after {TIMEOUT:.0f} s")
            ready, _, _ = select.select([main], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: every copy of the terminal's other end is closed
                break
            if not data:
                break
            chunks.append(data)
        rc = proc.wait(timeout=60)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    text = b"".join(chunks).decode("utf-8", "replace")
    command = "lort " + " ".join(map(str, args))
    assert "Traceback" not in text, f"{command} crashed on a terminal:\n{text}"
    assert rc == 0, f"{command} exited {rc} on a terminal:\n{text}"
    return text


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("terminal") / "run"
    text = on_terminal("fit", "--out", out, *SMALL)
    assert HIDE_CURSOR in text  # the bars were drawn: the child saw a terminal
    assert "top-1" in plain(text)
    return out


def test_fit_on_a_terminal(run: Path) -> None:
    assert (run / "report.json").is_file()


def test_predict_on_a_terminal(run: Path, tmp_path: Path) -> None:
    images = tmp_path / "images.npy"  # the digits run's 8x8 grey images, values in [0, 1]
    np.save(images, np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32))
    text = on_terminal("predict", run, images, "--top-k", "2")
    assert HIDE_CURSOR in text
    assert "classified 20 inputs" in plain(text)


def test_compare_on_a_terminal(run: Path) -> None:
    text = on_terminal("compare", run, "--methods", "lort,ce", "--seeds", "1")
    assert HIDE_CURSOR in text
    assert "/None" not in text  # the count before the number of points is known


def test_export_on_a_terminal(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    text = on_terminal("export", run, "--out", out)
    assert out.is_file() and "wrote" in plain(text)


def test_analyze_on_a_terminal(run: Path) -> None:
    text = on_terminal(
        "analyze", run / "logits.npy", "--labels", run / "labels.npy",
        "--train-counts", run / "train_counts.npy",
    )  # fmt: skip
    assert "/None" not in text


# Output that is not a terminal: a log file, a pipe, CI. No bars; a line at a steady rhythm.


def test_heartbeat_says_what_runs_at_a_steady_rhythm() -> None:
    from rich.console import Console

    from lort.cli.progress import Heartbeat

    log = io.StringIO()
    now = [100.0]
    console = Console(file=log)
    clock = lambda: now[0]  # noqa: E731
    beat = Heartbeat(console, "lort fit", starting="the data", first=0.05, every=0.1, clock=clock)
    assert beat.line() == "lort fit 0 s: starting (the data)"
    beat.step("stage 1", 10, 1000, epochs=10, detail="loss 1.234, acc 50.0%")
    now[0] += 5.0
    beat.step("stage 1", 60, 1000, epochs=10, detail="loss 1.000, acc 60.0%")
    assert beat.line() == (
        "lort fit 5 s: stage 1, epoch 1/10, 60/1,000 steps, loss 1.000, acc 60.0%, "
        "10.0 steps/s, about 1 min 34 s left"
    )
    now[0] += 94.0
    beat.step("stage 1", 1000, 1000, epochs=10)
    assert beat.line().endswith(
        "epoch 10/10, 1,000/1,000 steps, 10.0 steps/s, done; on to what follows"
    )
    now[0] += 600.0  # what follows reports nothing yet: the phase's rate stays its own
    assert beat.line().endswith("1,000/1,000 steps, 10.0 steps/s, done; on to what follows")
    with beat:  # the thread prints: the first line after `first`, then one every `every`
        time.sleep(0.58)
    lines = log.getvalue().splitlines()
    assert 4 <= len(lines) <= 7, lines
    assert all(line.startswith("lort fit 11 min 39 s: stage 1") for line in lines)


def test_heartbeat_is_silent_on_a_terminal() -> None:
    from rich.console import Console

    from lort.cli.progress import Heartbeat

    log = io.StringIO()
    with Heartbeat(Console(file=log, force_terminal=True), "lort fit", first=0.01, every=0.01):
        time.sleep(0.1)
    assert log.getvalue() == ""


def test_estimate_from_the_first_steps() -> None:
    from lort.cli.progress import Estimate, duration

    now = [0.0]
    est = Estimate(steps=5, seconds=2.0, clock=lambda: now[0])
    assert est.step(201, 1200) is None  # a resumed phase: timed from where it starts
    now[0] = 1.0
    assert est.step(211, 1200) is None  # 1 s: too soon
    now[0] = 2.0
    assert est.step(221, 1200) == pytest.approx((979 / 10.0, 10.0))
    now[0] = 3.0
    assert est.step(231, 1200) is None  # once
    assert [duration(s) for s in (0.4, 59, 61, 3599, 7260)] == [
        "0 s", "59 s", "1 min 1 s", "59 min 59 s", "2 h 1 min",
    ]  # fmt: skip


LONGER = ("--epochs1", "60", "--epochs2", "2", "--smooth", "0.5")


def test_fit_piped_prints_life_at_once_and_full_lines(tmp_path: Path) -> None:
    """`lort fit 2>&1 | tee log`: stdout and stderr are pipes. A line within 5 s of the start,
    the stage-1 estimate, progress lines with the epoch, and no line wrapped at 80 columns."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(LORT_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = tmp_path / ("a-run-folder-with-a-name-long-enough-to-wrap-" + "x" * 40)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lort", "fit", "--out", str(out), *LONGER],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[tuple[float, str]] = []
    for line in proc.stdout:
        lines.append((time.monotonic() - started, line.rstrip("\n")))
    assert proc.wait(timeout=TIMEOUT) == 0, "\n".join(t for _, t in lines)
    text = "\n".join(t for _, t in lines)
    first = lines[0][0]
    assert first < 5.0, f"the first line came after {first:.1f} s:\n{text}"
    assert re.search(r"^lort fit \d+ s: ", text, flags=re.M), text  # the heartbeat
    assert re.search(
        r"^stage 1: about .+ to go \(60 epochs; [\d.,]+ steps/s so far\)$", text, flags=re.M
    ), text
    hint = (
        f"`lort analyze {out}/logits.npy --labels {out}/labels.npy --train-counts "
        f"{out}/train_counts.npy`"
    )
    assert hint in text, text  # one line, whole: copyable from the log
    assert "top-1 acc" in text and HIDE_CURSOR not in text


def test_fit_on_a_terminal_estimates_stage_1_without_log_lines(tmp_path: Path) -> None:
    text = plain(on_terminal("fit", "--out", tmp_path / "run", *LONGER))
    assert re.search(r"stage 1: about .+ to go \(60 epochs", text), text
    assert not re.search(r"lort fit \d+ s: ", text), text  # the bars say it on a terminal
