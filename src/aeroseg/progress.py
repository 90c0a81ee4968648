"""Progress of long work: a tqdm bar on a terminal, plain periodic lines in a log.

``progress(...)`` takes tqdm's arguments. When its stream (stderr by default) is a terminal it is a tqdm
bar; otherwise (a log file, a pipe, a batch job) redrawn bars would fill the log with carriage returns, so
it writes one plain line every :data:`LOG_INTERVAL` seconds, and one at the end of work that wrote any
(short work writes nothing; no count is written twice); the line starts with ``desc`` (the caller names
its work)::

    predict scene: 120/480 windows (25%), 0:01:10 elapsed, about 0:03:30 left
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm.auto import tqdm

# seconds between two plain progress lines; AEROSEG_PROGRESS_INTERVAL sets it (a GUI reading the lines: 2)
LOG_INTERVAL = float(os.environ.get("AEROSEG_PROGRESS_INTERVAL") or 30.0)


def progress(iterable: Iterable[Any] | None = None, **options: Any) -> Any:
    """A tqdm bar (terminal), or a :class:`LogProgress` writing plain lines (anything else)."""
    stream = options.get("file") or sys.stderr
    if options.get("disable") is None:  # tqdm's "only on a terminal": the log gets plain lines instead
        options["disable"] = False
    if options.get("disable") or _is_terminal(stream):
        return tqdm(iterable, **options)
    return LogProgress(iterable, **options)


def write_line(text: str, file: TextIO | None = None) -> None:
    """A message line that does not break a progress bar on a terminal (a plain line in a log)."""
    stream = file or sys.stderr
    (tqdm if _is_terminal(stream) else LogProgress).write(text, file=stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LogProgress:
    """The tqdm calls the commands make (iteration, update, set_postfix, write, close), as plain lines."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: float | None = None,
        initial: float = 0,
        desc: str | None = None,
        unit: str = "it",
        file: TextIO | None = None,
        interval: float | None = None,  # seconds between two lines; None: LOG_INTERVAL
        **ignored: Any,  # leave, dynamic_ncols, ...: meaningful for a bar only
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.n, self.initial = iterable, total, initial, initial
        self.desc, self.unit, self.file = desc, unit, file or sys.stderr
        self.interval = LOG_INTERVAL if interval is None else interval
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._closed = False
        self.lines = 0  # plain lines written so far
        self._written: float | None = None  # the count of the last line

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        if not self._closed and self.lines and self.n != self._written:
            self._line(time.monotonic())
        self._closed = True

    @staticmethod
    def write(text: str, file: TextIO | None = None, **ignored: Any) -> None:
        print(text, file=file or sys.stderr, flush=True)

    def _line(self, now: float) -> None:
        elapsed = now - self._start
        count = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        parts = [f"{count} {self.unit}s"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{_clock(elapsed)} elapsed")
        done = self.n - self.initial
        if self.total and 0 < done and self.n < self.total:
            parts.append(f"about {_clock(elapsed / done * (self.total - self.n))} left")
        if self.postfix:
            parts.append(self.postfix)
        print(
            ", ".join(parts) if not self.desc else f"{self.desc}: " + ", ".join(parts),
            file=self.file,
            flush=True,
        )
        self.lines += 1
        self._written = self.n


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
