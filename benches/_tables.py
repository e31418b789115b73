"""Plain-text and Markdown tables, and the header naming a run, shared by the benchmark
scripts."""

import os
import shlex
import subprocess
import sys


def run_header(threads: int, torch_version: str) -> str:
    """The command, the commit and the machine's load: what a quoted number needs beside it."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"command: python {shlex.join(sys.argv)}\n"
        f"lort commit {commit}, torch {torch_version}, {threads} threads, "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def fmt_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "-" * len(line)]
    for r in rows:
        cells = zip(r, widths, strict=True)
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)))
    return "\n".join(out)


def fmt_md(rows: list[list[str]], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
