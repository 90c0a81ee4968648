"""Nothing half-written ever carries its final name: every output is written under a hidden temporary name
beside its final path, unique to the process and the call (pid + random), and renamed over the final path
once complete; on failure the temporary is removed. Two runs writing into one folder never share a
temporary name, and :func:`exclusive` keeps a second run from writing the same output at the same time.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aeroseg.errors import UserError

PARTIAL = ".partial"  # every temporary name holds it: ".<stem>.<pid>-<random>.partial<suffix>"


def temporary_path(path: str | os.PathLike[str]) -> Path:
    """A hidden name beside ``path``, unique to this process and call, with the same suffix (writers that
    pick the format from the suffix still do)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL}{path.suffix}")


@contextmanager
def atomic(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary name of ``path``; rename it to ``path`` when the block ends, delete it on failure."""
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale(folder: str | os.PathLike[str]) -> int:
    """Delete the temporary files (``.*.partial*``) of runs that no longer run, directly in ``folder``; a
    rerun calls it so that an interrupted run leaves nothing behind. Returns how many were removed."""
    removed = 0
    for tmp in Path(folder).glob(f".*{PARTIAL}*"):
        pid = tmp.name.rsplit(PARTIAL, 1)[0].rsplit(".", 1)[-1].split("-")[0]
        if pid.isdigit() and _running(int(pid)):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed += 1
    return removed


LOCK = ".lock"  # the lock of an output: ".<name>.lock" beside it, holding the writer's pid
_LOCK_GRACE_S = 10.0  # a lock without a pid younger than this is being written by a live run


def _lock_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{LOCK}")


@contextmanager
def exclusive(path: str | os.PathLike[str], *, what: str = "aeroseg") -> Iterator[None]:
    """Hold the lock of the output ``path`` (``.<name>.lock`` beside it, created with O_EXCL, holding this
    process's pid) while the block runs; removed when it ends. A lock held by a live process is refused
    with one :class:`UserError` line; a dead run's lock is taken over."""
    lock = _lock_path(path)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None:
                who = f" (pid {owner})" if owner > 0 else ""
                raise UserError(
                    f"{path} is being written by another {what} run{who}; wait for it to end or choose "
                    "another output"
                ) from None
            lock.unlink(missing_ok=True)  # the lock of a run that no longer runs
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        break
    else:
        raise UserError(f"cannot lock {path}: {lock} keeps coming back; remove it if no run writes {path}")
    try:
        yield
    finally:
        if _lock_owner(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> int | None:
    """The pid of the live process holding ``lock``; None when it is gone (or the lock is)."""
    try:
        text = lock.read_text(encoding="ascii", errors="replace").strip()
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return None
    if not text.isdigit():  # being written right now, or garbage left long ago
        return -1 if age < _LOCK_GRACE_S else None
    pid = int(text)
    return pid if pid == os.getpid() or _running(pid) else None


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file."""
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file."""
    with atomic(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_dir(path: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield a new hidden folder beside ``path``; when the block ends its files are flushed to disk and it
    becomes ``path``. An existing ``path`` is replaced only with ``replace`` (after the new folder is
    complete), else :class:`FileExistsError`. On failure the new folder is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if not path.exists():
            os.replace(tmp, path)
        elif not replace:
            raise FileExistsError(f"{path} exists")
        else:  # a folder cannot be renamed over a non-empty one: move the old one aside first
            old = temporary_path(path.with_name(path.name + ".old"))
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
