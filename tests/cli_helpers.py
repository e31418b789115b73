"""Running ``lort`` in-process from the tests (click's CliRunner) and reading what it wrote."""

from __future__ import annotations

from pathlib import Path

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


def flat(text: str) -> str:
    """Text with rich's line wrapping undone (every run of whitespace becomes one space)."""
    return " ".join(text.split())


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}
