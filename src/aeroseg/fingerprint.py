"""What identifies local weights: their content, not the path that names them.

``aeroseg predict`` records the model that made a class raster
(:func:`aeroseg.prediction.settings.model_identity`) and a rerun compares it, so the same weights named by
another path (relative or absolute, from another folder, a copy, a symlink) must give the same record, and
other weights under the same path another one. A file is identified by its size and the SHA-256 of its bytes;
a folder (a checkpoint or transformers directory) by
the names and digests of its files (not those of hidden files or sub-folders).

Hashing reads the whole file (about 1 s a GB), so the digest of a file of at least :data:`CACHED_BYTES` is
kept in ``<aeroseg cache>/digests.json`` (see :func:`aeroseg.hub.cache_dir`), keyed by the file's path,
device, inode, size and modification time: a rerun on unchanged weights reads nothing of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from aeroseg.atomic import write_text
from aeroseg.hub import cache_dir

CACHED_BYTES = 64 << 20  # smaller files are hashed each time (faster than the cache's round trip)
CACHE_ENTRIES = 512  # digests kept in the cache file, the most recent
_CHUNK = 1 << 20


def weights_digest(path: str | os.PathLike[str]) -> str | None:
    """``sha256:<16 hex>`` of a local weights file or folder; None when ``path`` is neither (a hub id)."""
    path = Path(path).expanduser()
    if path.is_file():
        parts = [file_digest(path)]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        parts = [f"{p.name}={file_digest(p)}" for p in files]
    else:
        return None
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """``<size>:<sha256 hex>`` of the file ``path`` (from the cache for large unchanged files)."""
    stat = path.stat()
    if stat.st_size < CACHED_BYTES:
        return _hash(path, stat.st_size)
    key = f"{path.resolve()}|{stat.st_dev}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}"
    store = cache_dir() / "digests.json"
    known = _read(store)
    if key not in known:
        known[key] = _hash(path, stat.st_size)
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            write_text(store, json.dumps(dict(list(known.items())[-CACHE_ENTRIES:]), indent=0) + "\n")
        except OSError:  # a read-only cache: hash again next time
            pass
    return known[key]


def _read(store: Path) -> dict[str, str]:
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in known.items() if isinstance(v, str)} if isinstance(known, dict) else {}


def _hash(path: Path, size: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
    return f"{size}:{sha.hexdigest()}"
