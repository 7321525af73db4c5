"""Progress reporting for ``ctx bench``: a tqdm bar, plain lines on stderr, or nothing.

:class:`Progress` is what the benchmark runners call: :meth:`Progress.note`
for a status line ("connecting to redis"), :meth:`Progress.task` for a
counted piece of work (the table's runs, the sweep's points). It draws a tqdm
bar when tqdm is installed and stderr is a terminal (or ``bar=True``), falls
back to one line per step on stderr, and says nothing when disabled
(``ctx bench -q``). Nothing ever goes to stdout, so ``--json`` output stays
clean. tqdm is imported only when a bar is drawn.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["Progress", "Task"]


class Task:
    """One counted piece of work; :meth:`step` marks a step done (or starting, for lines)."""

    def __init__(self, progress: Progress, desc: str, total: int, bar: Any = None) -> None:
        self._progress = progress
        self.desc = desc
        self.total = total
        self.done = 0
        self._bar = bar

    def step(self, label: str = "") -> None:
        """Announce the next step (``label`` says what it is); the previous one is done."""
        if self._bar is not None:
            if self.done:
                self._bar.update(1)
            self._bar.set_postfix_str(label, refresh=True)
        elif self._progress.enabled:
            self._progress._line(f"[{self.done + 1}/{self.total}] {self.desc}: {label}")
        self.done += 1

    def _finish(self) -> None:
        if self._bar is not None:
            if self.done:
                self._bar.update(1)
            self._bar.close()


class Progress:
    """Where benchmark progress goes.

    Args:
        enabled: report anything at all (``False`` for ``-q``).
        bar: ``True`` to draw a tqdm bar even when stderr is not a terminal,
            ``False`` for plain lines, ``None`` (default) for a bar on a terminal
            when tqdm is installed.
        stream: where to write (default ``sys.stderr``).
        callback: instead of writing lines, pass each message to this function.
    """

    def __init__(
        self,
        enabled: bool = True,
        *,
        bar: bool | None = None,
        stream: TextIO | None = None,
        callback: Callable[[str], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self._callback = callback
        has_tqdm = importlib.util.find_spec("tqdm") is not None
        if bar is None:
            isatty = getattr(self.stream, "isatty", None)
            bar = bool(isatty and isatty())
        self.use_bar = enabled and bar and has_tqdm and callback is None
        self._active: Any = None

    @classmethod
    def silent(cls) -> Progress:
        return cls(enabled=False)

    @classmethod
    def coerce(cls, progress: Progress | Callable[[str], None] | None) -> Progress:
        """A :class:`Progress` from ``None`` (silent), a callable (its lines) or a Progress."""
        if progress is None:
            return cls.silent()
        if isinstance(progress, Progress):
            return progress
        return cls(callback=progress, bar=False)

    def _line(self, msg: str) -> None:
        if self._callback is not None:
            self._callback(msg)
        elif self._active is not None:
            self._active.write(f"  {msg}", file=self.stream)
        else:
            print(f"  {msg}", file=self.stream, flush=True)

    def note(self, msg: str) -> None:
        """A status line (above the bar, when one is drawn)."""
        if self.enabled:
            self._line(msg)

    @contextmanager
    def task(self, desc: str, total: int) -> Iterator[Task]:
        """A counted piece of work of ``total`` steps; yields its :class:`Task`."""
        bar = None
        if self.use_bar and total > 0:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=desc, file=self.stream, leave=False, dynamic_ncols=True)
            self._active = bar
        task = Task(self, desc, total, bar)
        try:
            yield task
        finally:
            task._finish()
            self._active = None
