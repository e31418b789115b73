"""Text for a terminal. What lort prints of a user's strings (class names, file and folder
names, values read from files) reaches the terminal as the characters it holds: never as a
control sequence (``\\x1b[31m`` would recolour, retitle or rewrite the terminal) nor, in what
goes through rich, as markup (``[red]``, or a ``[/x]`` that rich would refuse)."""

from __future__ import annotations

import os
import re
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# C0 controls, DEL, C1 controls, and the bidirectional overrides and isolates (which make a
# terminal show text in another order than it is).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def printable(text: object, *, newlines: bool = False) -> str:
    """``str(text)`` with each control character written as its Python escape (``\\x1b``,
    ``\\t``, ``\\u202e``); line breaks kept when ``newlines`` (a message of several lines)."""
    s = str(text)
    if newlines:
        return "\n".join(_CONTROL.sub(_escaped, line) for line in s.split("\n"))
    return _CONTROL.sub(_escaped, s)


def shown(text: object) -> str:
    """``text`` for a rich console: :func:`printable`, and its brackets printed as written,
    not read as markup."""
    return escape(printable(text))


# The width of output that is not a terminal (a log, a pipe, a notebook cell): wide enough that
# no table row or command line is wrapped, so that a line copied from a log is the whole line.
PIPED_WIDTH = 10_000


class FullWidthConsole(Console):
    """A rich Console that wraps at the terminal's width on a terminal and nowhere else (rich
    alone wraps piped output at 80 columns, cutting table cells and commands in two); an
    explicit ``COLUMNS`` still rules. Off a terminal a table's title, which rich wraps to the
    table's own width, is printed whole on the line above it."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self.is_terminal or "COLUMNS" in os.environ:
            super().print(*objects, **kwargs)
            return
        for obj in objects:
            if isinstance(obj, Table) and obj.title:
                title, obj.title = obj.title, None
                text = title if isinstance(title, Text) else Text.from_markup(str(title))
                super().print(text, soft_wrap=True)
            super().print(obj, **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or self._width is not None or "COLUMNS" in os.environ:
            return size
        return ConsoleDimensions(PIPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size
