"""Hidden temporary names of the files the plugin writes, renamed into place once complete.

The pattern is aeroseg's own (``aeroseg.atomic.temporary_path``: ``.<stem>.<pid>-<random>.partial<suffix>``,
unique to the process and the call), so two QGIS sessions writing into one folder never share a name, and a
later ``aeroseg predict`` removes what a killed session left there. The plugin runs in QGIS's Python, where
aeroseg is not importable: this is the one place of that rule in the plugin.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def temporary_path(target: str | os.PathLike[str]) -> Path:
    """A hidden name beside ``target``, unique to this process and call, with the same suffix."""
    target = Path(target)
    return target.with_name(f".{target.stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{target.suffix}")
