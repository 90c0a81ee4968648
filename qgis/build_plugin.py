"""Build the installable zip of the QGIS plugin: ``python qgis/build_plugin.py`` → ``dist/aeroseg_qgis.zip``.

The zip holds the folder ``aeroseg_qgis/`` (what Plugins ▸ Manage and Install Plugins ▸ Install from ZIP and
the official plugin repository expect), without caches. Its version (metadata.txt) must be aeroseg's
(pyproject.toml), so that the plugin and the package it installs are released together.
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import sys
import zipfile
from pathlib import Path

from aeroseg.atomic import atomic

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "aeroseg_qgis"
ROOT = HERE.parent
SKIPPED = {"__pycache__", ".pytest_cache", ".ruff_cache"}


def plugin_files(folder: Path = PLUGIN) -> list[Path]:
    """The files of the plugin, sorted, without caches and compiled files."""
    files = []
    for directory, names, filenames in os.walk(folder):
        names[:] = sorted(n for n in names if n not in SKIPPED)
        files += [Path(directory) / f for f in sorted(filenames) if not f.endswith((".pyc", ".pyo"))]
    return files


def check_version(folder: Path = PLUGIN, pyproject: Path = ROOT / "pyproject.toml") -> str:
    metadata = configparser.ConfigParser()
    metadata.read(folder / "metadata.txt", encoding="utf-8")
    version = metadata["general"]["version"]
    package = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    if package is None or package[1] != version:
        found = package[1] if package else "none"
        sys.exit(f"build_plugin: metadata.txt has version {version}, pyproject.toml {found}; make them equal")
    return version


def build(output: Path) -> Path:
    """Write the zip to ``output`` (under a temporary name first)."""
    check_version()
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic(output) as partial, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in plugin_files():
            archive.write(path, path.relative_to(PLUGIN.parent).as_posix())
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / "aeroseg_qgis.zip")
    args = parser.parse_args()
    print(build(args.output))


if __name__ == "__main__":
    main()
