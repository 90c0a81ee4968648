"""What identifies local weights: their content, not the path that names them.

``aeroseg predict`` records the model that made a class raster (:func:`aeroseg.registry.identity`) and a
rerun compares it, so the same weights named by another path (relative or absolute, from another folder, a
copy, a symlink) must give the same record, and other weights under the same path another one. A file is
identified by its size and the SHA-256 of its bytes; a folder (a checkpoint or transformers directory) by
the names and digests of its files (not those of hidden files or sub-folders). Digests are kept for the
life of the process, keyed by the file's identity and modification time, so each file is read once.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

_CHUNK = 1 << 20


def weights_digest(path: str | os.PathLike[str]) -> str | None:
    """``sha256:<16 hex>`` of a local weights file or folder; None when ``path`` is neither (a hub id)."""
    path = Path(path).expanduser()
    if path.is_file():
        parts = [_file_digest(path)]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        parts = [f"{p.name}={_file_digest(p)}" for p in files]
    else:
        return None
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _digest(path: str, device: int, inode: int, size: int, mtime_ns: int) -> str:
    """``<size>:<sha256 hex>`` of the file (the other arguments key the cache)."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return f"{size}:{sha.hexdigest()}"
