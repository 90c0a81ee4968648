"""Which ``aeroseg`` command the plugin runs: the one in the plugin's settings, else ``$AEROSEG_EXECUTABLE``,
else ``aeroseg`` on PATH. The model never runs in QGIS's own Python: every run is a subprocess of that
command, in its own environment (see :mod:`aeroseg_qgis.environment` for the one the plugin can create)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping

ENVIRONMENT_VARIABLE = "AEROSEG_EXECUTABLE"
# What the plugin tells a user who has no aeroseg yet (one line, shown in the message bar and the log).
HOW_TO_INSTALL = (
    "create its environment from the aeroseg dock (Set up…), set its path in the aeroseg settings, "
    f"or set {ENVIRONMENT_VARIABLE}"
)


class NotInstalled(Exception):
    """No usable aeroseg command; the message is one line saying what to do."""


def find_executable(
    configured: str | None,
    environ: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> str:
    """The aeroseg command to run: ``configured`` (the plugin's setting), ``$AEROSEG_EXECUTABLE`` or ``aeroseg``
    on PATH, in that order; :class:`NotInstalled` with one line when none is usable."""
    environ = os.environ if environ is None else environ
    for value, where in (
        (configured, "the aeroseg settings"),
        (environ.get(ENVIRONMENT_VARIABLE), ENVIRONMENT_VARIABLE),
    ):
        if value and value.strip():
            path = os.path.expanduser(value.strip())
            if not os.path.isfile(path):
                raise NotInstalled(
                    f"the aeroseg executable {path} (from {where}) does not exist; {HOW_TO_INSTALL}"
                )
            if not os.access(path, os.X_OK):
                raise NotInstalled(f"the aeroseg executable {path} (from {where}) is not executable")
            return path
    found = which("aeroseg")
    if found is None:
        raise NotInstalled(f"aeroseg is not installed: {HOW_TO_INSTALL}")
    return found
