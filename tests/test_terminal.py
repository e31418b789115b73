"""``lort`` on an interactive terminal: each command run in a child process whose stdin,
stdout and stderr are a real pseudo-terminal, so rich draws its live progress bars (CliRunner
and pipes are not terminals, and there rich turns the bars off). The child's environment has
none of the variables with which rich decides a terminal without looking (FORCE_COLOR,
TTY_COMPATIBLE, TTY_INTERACTIVE, NO_COLOR, ...)."""

from __future__ import annotations

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
