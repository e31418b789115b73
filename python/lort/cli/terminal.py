"""Text for a terminal. What lort prints of a user's strings (class names, file and folder
names, values read from files) reaches the terminal as the characters it holds: never as a
control sequence (``\\x1b[31m`` would recolour, retitle or rewrite the terminal) nor, in what
goes through rich, as markup (``[red]``, or a ``[/x]`` that rich would refuse)."""

from __future__ import annotations

import re

from rich.markup import escape

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
