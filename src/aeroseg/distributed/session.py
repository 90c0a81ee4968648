"""The Ray session of a distributed prediction: joining a cluster (or starting a local one), stopping
what was started on every way out, and keeping Ray's own messages out of the log.

A local cluster that :func:`session` started is stopped when its block ends, whatever the end: a return,
an exception, Ctrl+C or SIGTERM. ``ray.init`` replaces the signal handlers of the process: those in place
before are put back, and SIGTERM then raises :class:`KeyboardInterrupt` unless a handler of the program
takes it, so that the command ends with its usual "interrupted" line instead of Ray's stack lines. What a
``kill -9`` of the command leaves running is stopped by :mod:`aeroseg.distributed.reaper`.
Unless ``verbose``, Ray's own messages are dropped: its start-up lines and warnings (the ``ray`` logger
below ERROR), the workers' output and the raylet's lines about lost workers (printed in colour to
stdout, which aeroseg reports in its own words).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from aeroseg.distributed import reaper
from aeroseg.errors import UserError
from aeroseg.raster import one_line

NAMESPACE = "aeroseg"


def connect(address: str, *, verbose: bool = False) -> bool:
    """Join the Ray cluster at ``address`` ("auto", "local" or host:port / ray://...); reuse an open one.
    Returns whether this call connected (an open session is left as it is)."""
    if ray.is_initialized():
        return False
    if not verbose:
        logging.getLogger("ray").setLevel(logging.ERROR)
        _drop_raylet_lines()
    options: dict[str, Any] = dict(
        log_to_driver=verbose, namespace=NAMESPACE, logging_level=logging.INFO if verbose else logging.ERROR
    )
    try:
        if address == "local":
            ray.init(include_dashboard=False, **options)
        elif address == "auto":
            try:
                ray.init(address="auto", **options)
            except ConnectionError:
                ray.init(include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserError(f"cannot reach the Ray cluster at {address}: {one_line(error)}") from None
    return True


@contextmanager
def session(address: str, *, verbose: bool = False) -> Iterator[None]:
    """Connected to the cluster at ``address`` for the block; what this call started is stopped at its
    end (see the module docstring), and by :mod:`aeroseg.distributed.reaper` should this process be
    killed. A session open before is used and left open."""
    main = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    watchdog = None if ray.is_initialized() else reaper.start()
    started = False
    try:
        try:
            started = connect(address, verbose=verbose)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if main and handlers[signal.SIGTERM] in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _interrupt)
        yield
    finally:
        if main and handlers:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM cannot cut the shutdown short
        if started:
            ray.shutdown()
        if watchdog is not None and watchdog.stdin is not None:
            watchdog.stdin.close()  # it stops what the shutdown left running
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _drop_raylet_lines() -> None:
    """Have the driver drop the raylet's messages (Ray prints them from a thread of its own, to stdout)."""
    worker = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "aeroseg_quiet", False):
        return

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            original(data, ignore_prefix)

    print_to_stdstream.aeroseg_quiet = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream
