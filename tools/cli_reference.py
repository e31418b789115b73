"""Write docs/cli.md, the command-line reference, from the click declarations of ``lort``.

    python tools/cli_reference.py            # rewrite docs/cli.md
    python tools/cli_reference.py --check    # exit 1 when docs/cli.md differs from the code

tests/test_docs.py runs the check, so the page cannot drift from the options it documents.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import click

from lort.cli.commands import main
from lort.files import atomic_write

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

HEADER = """# Command-line reference

Generated from the option declarations by `python tools/cli_reference.py` (a test fails when
this page and the code differ). What the options do, in context: the [guide](guide.md),
[protocols](protocols.md), [analysis](analysis.md) and
[predict, keep, export](predict-keep-export.md). Every command also answers `--help`.
"""


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _kind(param: click.Parameter) -> str:
    """What an option takes: its choices, a range, a type name, or nothing for a flag."""
    if isinstance(param, click.Option) and (param.is_flag or param.count):
        return ""
    kind = param.type
    if isinstance(kind, click.Choice):
        return " \\| ".join(f"`{c}`" for c in kind.choices)
    if isinstance(kind, click.IntRange):
        low = "" if kind.min is None else f"{kind.min:,}"
        high = "" if kind.max is None else f"{kind.max:,}"
        return f"integer {low}..{high}"
    if isinstance(kind, click.Path):
        return "path"
    return {"integer": "integer", "float": "number", "text": "text"}.get(kind.name, kind.name)


def _default(param: click.Parameter) -> str:
    if not isinstance(param, click.Option) or not param.show_default:
        return ""
    value = param.default
    return "" if value is None or value is False else f"`{value}`"


def _names(param: click.Option) -> str:
    names = [*param.opts, *param.secondary_opts]
    return ", ".join(f"`{n}`" for n in names)


def command_section(name: str, command: click.Command) -> str:
    """One command: its usage line, its help, and a table of its options."""
    ctx = click.Context(command, info_name=f"lort {name}")
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [f"## `lort {name}`", "", f"`lort {name} {usage}`", ""]
    lines += [inspect.cleandoc(command.help or ""), ""]
    lines += ["| option | takes | default | what it does |", "|---|---|---|---|"]
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            cells = (_names(param), _kind(param), _default(param), _cell(param.help or ""))
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("| `-h`, `--help` |  |  | Show the command's help. |")
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole page, commands in the order ``lort --help`` lists them."""
    ctx = click.Context(main, info_name="lort")
    assert isinstance(main, click.Group)
    names = main.list_commands(ctx)
    overview = ["| command | what it does |", "|---|---|"]
    for n in names:
        summary = _cell(main.commands[n].get_short_help_str(200))
        overview.append(f"| [`lort {n}`](#lort-{n}) | {summary} |")
    sections = [command_section(n, main.commands[n]) for n in names]
    return "\n".join([HEADER, "\n".join(overview) + "\n", *sections])


def main_cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    page = render()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != page:
            print(f"{PAGE} is out of date: run python tools/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    atomic_write(PAGE, lambda f: f.write(page.encode()))
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
