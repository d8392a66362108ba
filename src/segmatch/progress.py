"""Progress of long steps, reported through a sink that the command line installs.

Library code calls :func:`progress` and never prints; by default nothing is shown. The CLI
installs a terminal sink only when standard error is a terminal and ``CI`` is unset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressTask(Protocol):
    def advance(self, steps: int = 1) -> None: ...


class ProgressSink(Protocol):
    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[ProgressTask]: ...


class _SilentTask:
    def advance(self, steps: int = 1) -> None:
        return None


class _SilentSink:
    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[ProgressTask]:
        yield _SilentTask()


_sink: ProgressSink = _SilentSink()


def install_sink(sink: ProgressSink | None) -> None:
    """Route progress to ``sink`` (None restores silence)."""
    global _sink  # noqa: PLW0603 -- one process-wide display, set once by the CLI
    _sink = sink if sink is not None else _SilentSink()


@contextmanager
def progress(description: str, total: int | None = None) -> Iterator[ProgressTask]:
    """Report the progress of a long step.

    Example:
        >>> with progress("k-means sweep", total=3) as task:
        ...     for _ in range(3):
        ...         task.advance()
    """
    with _sink.task(description, total) as task:
        yield task


class LibraryLog(logging.Handler):
    """Keeps what other libraries log (and Python warnings) off the terminal: a run writes it
    to its folder as ``run.log``. The CLI installs one on the root logger."""

    def __init__(self, *, on_terminal: bool = False) -> None:
        super().__init__(logging.INFO)
        #: Whether the lines are also shown on the terminal (``--verbose``).
        self.on_terminal = on_terminal
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def take(self) -> str:
        """The lines logged since the last call, as text (they are then forgotten)."""
        taken, self.lines = self.lines, []
        return "".join(f"{line}\n" for line in taken)


def library_log() -> LibraryLog | None:
    """The root logger's LibraryLog, when the CLI installed one."""
    return next((h for h in logging.getLogger().handlers if isinstance(h, LibraryLog)), None)
