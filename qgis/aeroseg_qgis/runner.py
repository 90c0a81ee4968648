"""Run one aeroseg command as a subprocess: its output line by line, Cancel, and a one-line error.

The child gets QGIS's environment without the variables that point QGIS's own Python, GDAL and PROJ at their
files (``PYTHONHOME``, ``PYTHONPATH``, ``GDAL_DATA``, ``PROJ_LIB``, ...): aeroseg runs in its own environment,
whose rasterio brings its own GDAL and PROJ. Cancel stops the child and every process it started (its own
process group on POSIX, ``taskkill /T`` on Windows).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence

STOP_GRACE = 5.0  # seconds between the polite stop (SIGTERM) and the forced one (SIGKILL)
_HOST_VARIABLES = (
    "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "GDAL_DATA", "GDAL_DRIVER_PATH",
    "PROJ_LIB", "PROJ_DATA", "GDAL_FILENAME_IS_UTF8",
)  # fmt: skip
_ERROR = re.compile(r"^aeroseg [\w-]+: error: ")


class Cancelled(Exception):
    """The user cancelled; the subprocess has been stopped."""


class CommandError(Exception):
    """The command failed; the message is one line (aeroseg's own error line where it wrote one)."""


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an aeroseg subprocess: ``environ`` without QGIS's Python/GDAL/PROJ variables,
    unbuffered UTF-8 output (class names may be any text)."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in _HOST_VARIABLES}
    # a plain progress line every 2 s (aeroseg's default for logs is 30 s): the progress bar follows closely
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", AEROSEG_PROGRESS_INTERVAL="2")
    return env


def start(command: Sequence[str], env: Mapping[str, str] | None = None, **options) -> subprocess.Popen:
    """``command`` started in its own process group, stdout and stderr merged into one text pipe."""
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW  # no console window
        options.setdefault("creationflags", flags)
    else:
        options.setdefault("start_new_session", True)
    return subprocess.Popen(
        list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace", bufsize=1,
        env=dict(child_environment() if env is None else env), **options,
    )  # fmt: skip


def stop(process: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """Stop ``process`` and its children: politely, then by force after ``grace`` seconds."""
    if process.poll() is not None:
        return
    if sys.platform == "win32":
        subprocess.run(
            ["taskkill", "/F", "/T", "/PID", str(process.pid)],
            capture_output=True, creationflags=subprocess.CREATE_NO_WINDOW,
        )  # fmt: skip
    else:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
    process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # its own session: the group id is its pid
    except ProcessLookupError:
        pass


def lines_of(process: subprocess.Popen) -> queue.Queue:
    """A queue receiving the output lines of ``process`` (without line ends), then None at its end."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        with process.stdout:
            for line in process.stdout:
                lines.put(line.rstrip("\r\n"))
        lines.put(None)

    threading.Thread(target=read, name="aeroseg-output", daemon=True).start()
    return lines


def run(
    command: Sequence[str],
    *,
    on_line: Callable[[str], None],
    is_canceled: Callable[[], bool],
    env: Mapping[str, str] | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    poll: float = 0.1,
) -> list[str]:
    """Run ``command`` to its end, passing each output line to ``on_line``; the last lines.

    :class:`Cancelled` when ``is_canceled()`` turns true (checked every ``poll`` seconds; the process is
    stopped first), :class:`CommandError` with one line when it cannot start or exits with a non-zero status.
    """
    try:
        process = start(command, env)
    except OSError as error:
        raise CommandError(f"cannot run {command[0]}: {error.strerror or error}") from None
    if on_start is not None:
        on_start(process)
    output, last = lines_of(process), deque(maxlen=40)
    try:
        while True:
            if is_canceled():
                stop(process)
                raise Cancelled()
            try:
                line = output.get(timeout=poll)
            except queue.Empty:
                continue
            if line is None:
                break
            last.append(line)
            on_line(line)
        status = process.wait()
    finally:
        stop(process)  # nothing is left running, whatever happened here
    if status != 0:
        raise CommandError(error_line(list(last), status, command[0]))
    return list(last)


def error_line(lines: Sequence[str], status: int, program: str) -> str:
    """One line for a failed run: aeroseg's own ``aeroseg VERB: error: ...`` line, else its last line."""
    for line in reversed(lines):
        if _ERROR.match(line):
            return line
    if status < 0:
        return f"{program} was stopped by signal {-status}"
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return f"{program} failed (exit status {status})" + (f": {last}" if last else "")
