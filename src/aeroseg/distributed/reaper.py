"""A watchdog that stops the processes of a local Ray cluster once the command that started it is gone,
however it went (a ``kill -9`` included, which no clean-up in the command itself can catch).

Ray ties its head processes to the driver (they die with it), but not the agents the raylet starts
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) nor a busy worker: they are left running with parent 1.
:func:`start` runs ``python -m aeroseg.distributed.reaper PID`` in a session of its own; it notes the
processes below PID (with their start times, so that a reused pid is never taken for one of them) every
:data:`TICK` seconds until its standard input ends (the command closed it, or died), then sends SIGTERM to
those still running and, after :data:`GRACE` seconds, SIGKILL to the rest. Linux (``/proc``) only;
elsewhere :func:`start` does nothing.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

TICK = 0.5  # seconds between two looks at the command's processes
GRACE = 2.0  # seconds between SIGTERM and SIGKILL


def start() -> subprocess.Popen[bytes] | None:
    """Start the watchdog of this process; close its ``stdin`` once the cluster is stopped."""
    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "aeroseg.distributed.reaper", str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid → (parent pid, start time)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(entry.name)] = (int(fields[1]), fields[19])
    return found


def _below(pid: int, processes: dict[int, tuple[int, str]]) -> dict[int, str]:
    """The processes below ``pid``: pid → start time."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in processes.items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = processes[child][1]
            todo.append(child)
    return found


def _signal(known: dict[int, str], sig: int) -> bool:
    """Send ``sig`` to the processes of ``known`` still running; whether any was."""
    alive = {pid: start for pid, start in known.items() if _processes().get(pid, (0, ""))[1] == start}
    for pid in alive:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    return bool(alive)


def main(pid: int) -> None:
    known: dict[int, str] = {}
    while True:
        known.update(_below(pid, _processes()))
        known.pop(os.getpid(), None)
        ready, _, _ = select.select([sys.stdin], [], [], TICK)
        if ready and not sys.stdin.buffer.read1(1024):  # the command closed the pipe, or is gone
            break
    if _signal(known, signal.SIGTERM):
        time.sleep(GRACE)
        _signal(known, signal.SIGKILL)


if __name__ == "__main__":
    main(int(sys.argv[1]))
