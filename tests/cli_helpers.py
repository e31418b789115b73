"""Running ``lort`` in-process from the tests (click's CliRunner) and reading what it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from lort.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str | Path) -> Result:
    """``lort ARGS`` in this process; a crash is never allowed, whatever the exit code."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"lort {' '.join(map(str, args))} crashed instead of failing cleanly: "
            f"{result.exception!r}\n{result.output}"
        ) from result.exception
    assert "Traceback" not in result.output
    return result


def ok(*args: str | Path) -> Result:
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result: Any, *parts: str) -> None:
    """Exit 1 with the error as the last line of stderr (one line, naming ``parts``), no
    result on stdout, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.stdout == "", result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    assert errors == [len(lines) - 1], lines
    for part in parts:
        assert part in lines[-1], (part, lines[-1])


def flat(text: str) -> str:
    """Text with rich's line wrapping undone (every run of whitespace becomes one space)."""
    return " ".join(text.split())


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}
