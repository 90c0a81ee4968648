"""Everything that fetches weights or files from elsewhere: the Hugging Face hub (one file, or a repository's
files), plain http(s) downloads into the aeroseg cache, and the rule that decides when to stay offline.

Every loader of the package goes through these functions, so that each failure to reach a hub or a server
becomes one line saying what to download and where to pass it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from aeroseg.atomic import atomic
from aeroseg.errors import CheckpointError


def hub_offline() -> bool:
    """Use only the local cache when ``HF_HUB_OFFLINE`` is set or the hub's host does not resolve: cached
    weights still load, and missing ones fail at once with one line instead of retrying for half a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return True
    return not _hub_resolves()


@functools.cache
def _hub_resolves() -> bool:
    from huggingface_hub import constants

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return False
    return True


def hub_file(source: str, what: str) -> str:
    """``hf://owner/repo/path/in/repo.pt`` (a model repository) or ``hf://spaces/owner/repo/path`` (a Space,
    where CAT-Seg publishes its weights) → a local copy of that one file; any other ``source`` as it is."""
    if not source.startswith("hf://"):
        return source
    parts = source[len("hf://") :].split("/")
    kind = {"spaces": "space", "datasets": "dataset"}.get(parts[0])
    parts = parts[1:] if kind else parts
    if len(parts) < 3:
        raise CheckpointError(f"{what} source {source!r} must look like hf://[spaces/]OWNER/REPO/PATH/FILE")
    from huggingface_hub import hf_hub_download

    try:
        repo, file = "/".join(parts[:2]), "/".join(parts[2:])
        options = {"repo_type": kind} if kind else {}
        return hf_hub_download(repo, file, local_files_only=hub_offline(), **options)
    except Exception as error:  # noqa: BLE001 - any hub failure becomes one line for the user
        raise CheckpointError(
            f"cannot download {source!r} ({type(error).__name__}); download the file where the hub is reachable "
            "and pass its local path"
        ) from None


def is_hub_id(source: str) -> bool:
    """Whether ``source`` reads as a hub repository id (``OWNER/NAME``) rather than a local path."""
    return not str(source).startswith((".", "/", "~")) and str(source).count("/") == 1


def hub_snapshot(repo: str, patterns: list[str], what: str) -> Path:
    """The local folder of the files of hub repository ``repo`` that match ``patterns`` (downloaded once)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=hub_offline()))
    except Exception as error:  # noqa: BLE001 - any hub failure becomes one line for the user
        raise CheckpointError(
            f"cannot download {what} {repo!r} from the Hugging Face hub ({type(error).__name__}); "
            "pass a local directory"
        ) from None


def cache_dir(override: str | None = None) -> Path:
    """The aeroseg cache: ``override``, ``$AEROSEG_CACHE``, ``$XDG_CACHE_HOME/aeroseg`` or ``~/.cache/aeroseg``."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("AEROSEG_CACHE"):
        return Path(os.environ["AEROSEG_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "aeroseg"


def download(url: str, *, what: str, hint: str, folder: str = "weights") -> Path:
    """The cached copy of ``url`` (``<cache>/<folder>/<key>-<name>``), downloaded on first use; a one-line
    :class:`CheckpointError` naming ``what`` and ``hint`` (what to pass instead) when it cannot be fetched."""
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    path = cache_dir() / folder / f"{key}-{url.rsplit('/', 1)[-1]}"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic(path) as tmp:
            tmp.write_bytes(response.read())
    except OSError as error:
        raise CheckpointError(
            f"cannot download {what} from {url} ({type(error).__name__}); download it where the internet is "
            f"reachable and {hint}"
        ) from None
    return path
