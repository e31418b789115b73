"""Progress of every command. On a terminal, the one progress bar: transient, on the
diagnostics console, and correct before its total is known (rich's own ``{task.total}`` formats
None: a crash with ``:,``, and ``0/None`` without). Elsewhere (a log, a pipe), a line at a
steady rhythm (:class:`Heartbeat`). And a phase's duration from its first steps
(:class:`Estimate`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

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


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 7 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class Heartbeat:
    """Progress for output that is not a terminal (a log file, a pipe, a notebook cell, CI),
    where the bars are off: a line at a steady rhythm, the first ``first`` seconds after the
    start and then every ``every`` seconds until the command ends, saying what it does: the
    phase, its epoch, loss and accuracy, the rate and the time left when known (before the
    first step, ``starting``: what a command does first)."""

    def __init__(
        self,
        console: Console,
        command: str,
        *,
        starting: str = "",
        first: float = 2.0,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console, self.command, self.starting = console, command, starting
        self.first, self.every, self.clock = first, every, clock
        self.started = clock()
        self.phase: str | None = None
        self.phase_start = (0.0, 0)  # (time, count) of the phase's first report
        self.last = 0.0  # the time of the latest report: a rate runs to it, not to now
        self.done, self.total, self.unit, self.detail = 0, 0, "", ""
        self.epochs: int | None = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def step(
        self,
        phase: str,
        done: int,
        total: int | None,
        *,
        unit: str = "steps",
        epochs: int | None = None,
        detail: str = "",
    ) -> None:
        """The command has done ``done`` of ``total`` UNITs of ``phase`` (an epoch is
        ``total / epochs`` of them); ``detail``: what else the line says (loss, accuracy)."""
        now = self.clock()
        if phase != self.phase:
            self.phase, self.phase_start = phase, (now, done)
        self.last = now
        self.done, self.total, self.unit = done, total or 0, unit
        self.epochs, self.detail = epochs, detail

    def line(self) -> str:
        now = self.clock()
        head = f"{self.command} {duration(now - self.started)}:"
        if self.phase is None:
            return f"{head} starting" + (f" ({self.starting})" if self.starting else "")
        parts = [self.phase]
        if self.total and self.epochs:
            per_epoch = max(1, self.total // self.epochs)
            epoch = min(self.epochs, self.done // per_epoch + (self.done % per_epoch > 0))
            parts.append(f"epoch {epoch}/{self.epochs}")
        count = f"{self.done:,}/{self.total:,}" if self.total else f"{self.done:,}"
        parts.append(f"{count} {self.unit}")
        if self.detail:
            parts.append(self.detail)
        t0, n0 = self.phase_start
        # To the latest report: after a phase's end (and between a phase's sparse reports)
        # the time since is not the phase's work.
        if self.done > n0 and self.last > t0:
            rate = (self.done - n0) / (self.last - t0)
            parts.append(f"{rate:,.1f} {self.unit}/s")
            if self.total:
                if self.done >= self.total:
                    parts.append("done; on to what follows")
                else:
                    parts.append(f"about {duration((self.total - self.done) / rate)} left")
        return f"{head} " + ", ".join(parts)

    def _beat(self) -> None:
        wait = self.first
        while not self.stop.wait(wait):
            self.console.print(Text(self.line()), soft_wrap=True)
            wait = self.every

    def __enter__(self) -> Heartbeat:
        if not self.console.is_terminal:
            self.thread = threading.Thread(target=self._beat, name="lort-heartbeat", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


class Estimate:
    """A phase's duration from its first steps, once: after at least ``steps`` steps and
    ``seconds`` seconds (the first steps pay for warm-up, so the estimate leans long)."""

    def __init__(
        self, *, steps: int = 5, seconds: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.steps, self.seconds, self.clock = steps, seconds, clock
        self.start: tuple[float, int] | None = None
        self.given = False

    def step(self, done: int, total: int) -> tuple[float, float] | None:
        """(seconds left, steps per second) the first time enough steps are timed, else None."""
        now = self.clock()
        if self.start is None:
            self.start = (now, done)
            return None
        t0, n0 = self.start
        if self.given or done - n0 < self.steps or now - t0 < self.seconds:
            return None
        self.given = True
        rate = (done - n0) / (now - t0)
        return (total - done) / rate, rate
