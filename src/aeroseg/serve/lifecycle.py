"""How ``aeroseg serve`` stops: on Ctrl+C (SIGINT) or SIGTERM, within a few seconds, leaving nothing behind.

While it serves, uvicorn takes both signals over, stops accepting requests, gives the open ones
:data:`STOP_SECONDS`, and raises the signal again once it is done. :func:`stop_on_signals` turns that
signal (or one that arrives before or after serving, e.g. while the model loads) into :class:`Stopped`, so
the ``finally`` clauses run: the running segmentation is asked to stop at its next window
(:meth:`aeroseg.serve.jobs.JobRunner.close`), the rasters are closed and the work folder (uploads, class
rasters) is removed. :func:`exit_soon` then makes sure that no thread still busy (a model download, a
forward pass over a huge batch) keeps the process alive beyond :data:`EXIT_SECONDS`.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STOP_SECONDS = 3.0  # open requests and the running segmentation get this long to finish
EXIT_SECONDS = 2.0  # after the clean-up the process ends within this long, whatever still runs
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """The server was asked to stop by a signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` in the main thread; once one has, further ones are ignored
    so that they cannot interrupt the clean-up (which :func:`exit_soon` bounds). Previous handlers are
    restored on exit. Outside the main thread this does nothing (signals reach only the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def work_folder() -> Iterator[Path]:
    """A fresh temporary folder (``aeroseg-serve-*``) with an ``uploads`` folder, removed on exit, whatever
    the exit (an exception, :class:`Stopped`, a normal return)."""
    folder = Path(tempfile.mkdtemp(prefix="aeroseg-serve-"))
    try:
        (folder / "uploads").mkdir()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def exit_soon(code: int, seconds: float = EXIT_SECONDS) -> None:
    """End the process with ``code`` after ``seconds`` unless it has ended by then (Python waits for every
    non-daemon thread before it exits; this daemon timer does not wait for them)."""

    def end() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()
