"""How long work reports its stages: the :class:`Progress` protocol every mode takes."""

from __future__ import annotations

from typing import Callable, Protocol


class Progress(Protocol):
    """Reports stages of work; :meth:`stage` returns a function that advances the stage."""

    def stage(self, description: str, total: float | None = None) -> Callable[[float], None]: ...


class NullProgress:
    """A :class:`Progress` that shows nothing."""

    def stage(self, description: str, total: float | None = None) -> Callable[[float], None]:
        return lambda n=1: None
