"""How long work reports its stages: the :class:`Progress` protocol every mode takes, and its
rich implementation for the command line (bars on stderr with time left)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Protocol


class Progress(Protocol):
    """Reports stages of work; :meth:`stage` returns a function that advances the stage."""

    def stage(self, description: str, total: float | None = None) -> Callable[[float], None]: ...


class NullProgress:
    """A :class:`Progress` that shows nothing."""

    def stage(self, description: str, total: float | None = None) -> Callable[[float], None]:
        return lambda n=1: None


class RichProgress:
    """A :class:`Progress` drawing one rich bar per stage, prefixed with ``prefix`` (the
    input's name); ``progress=None`` shows nothing."""

    def __init__(self, progress, prefix: str):
        self.progress = progress
        self.prefix = prefix

    def stage(self, description: str, total: float | None = None) -> Callable[[float], None]:
        if self.progress is None:
            return lambda n=1: None
        task = self.progress.add_task(f"{self.prefix}: {description}", total=total)

        def advance(n: float = 1) -> None:
            self.progress.advance(task, n)

        return advance


@contextmanager
def rich_bars(console, quiet: bool) -> Iterator[object]:
    """A ``rich.progress.Progress`` on ``console`` (elapsed and remaining time), or ``None``
    when ``quiet``."""
    if quiet:
        yield None
        return
    from rich.progress import (BarColumn, Progress as Bars, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Bars(TextColumn("{task.description}"), BarColumn(),
              TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
              TextColumn("left"), TimeRemainingColumn(), console=console,
              transient=False) as bars:
        yield bars
