"""Levelled log lines: core modules say what happened and how much it matters; the command layer decides
which levels reach stderr (cron mails warnings, a terminal also sees progress)."""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum


class Level(IntEnum):
    """How much a line matters; the command layer shows a line when its level reaches its threshold."""

    DEBUG = 10  # detail for bug reports (--verbose twice)
    INFO = 20  # progress and pins: a terminal, --verbose and the daemon show them
    WARNING = 30  # something an operator should read even under cron (a skipped write, a rejected signature)
    ERROR = 40


Sink = Callable[[Level, str], None]


class Log:
    """Where core modules send their lines; without a sink the lines go nowhere (a library default)."""

    __slots__ = ("_sink",)

    def __init__(self, sink: Sink | None = None) -> None:
        self._sink = sink

    def debug(self, message: str) -> None:
        self._emit(Level.DEBUG, message)

    def info(self, message: str) -> None:
        self._emit(Level.INFO, message)

    def warning(self, message: str) -> None:
        self._emit(Level.WARNING, message)

    def error(self, message: str) -> None:
        self._emit(Level.ERROR, message)

    def _emit(self, level: Level, message: str) -> None:
        if self._sink is not None:
            self._sink(level, message)


SILENT = Log()
