"""The one progress bar of every command: transient, on the diagnostics console, drawn only
when that console is a terminal, and correct before its total is known (rich's own
``{task.total}`` formats None: a crash with ``:,``, and ``0/None`` without)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text


class CountColumn(ProgressColumn):
    """``done/total UNIT``, or ``done UNIT`` while the total is unknown."""

    def __init__(self, unit: str = "") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        done = f"{int(task.completed):,}"
        text = done if task.total is None else f"{done}/{int(task.total):,}"
        return Text(f"{text} {self.unit}" if self.unit else text)


def progress_bar(
    console: Console, label: str, *, unit: str | None = None, fields: str | None = None
) -> Progress:
    """A bar: LABEL (a rich text template: ``{task.description}``, ``{task.fields[...]}``),
    the bar, the count in UNIT (none when UNIT is None), the FIELDS template, time left."""
    columns: list[ProgressColumn] = [TextColumn(label), BarColumn()]
    if unit is not None:
        columns.append(CountColumn(unit))
    if fields is not None:
        columns.append(TextColumn(fields))
    columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
