"""Where ``aeroseg predict`` writes: the rule of ``-o`` (a folder, or one class raster file), output folders
checked before any work, and inputs whose outputs would take the same names."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from aeroseg.errors import UserError
from aeroseg.prediction import paths as places


def output_file(output: str, count: int) -> Path | None:
    """The one class raster ``-o`` names (a single input and a .tif/.tiff/.png path), else None (a folder)."""
    if os.path.isdir(output):
        return None
    is_raster = Path(output).suffix.lower() in places.RASTER_SUFFIXES
    if os.path.exists(output):
        if count > 1:
            raise UserError(f"-o {output} is an existing file; with {count} inputs -o names a folder")
        if not is_raster:
            raise UserError(f"-o {output} is an existing file; give a folder or a .tif/.png file name")
        return Path(output)
    if output.endswith(("/", os.sep)):
        return None
    if is_raster:
        if count > 1:
            raise UserError(f"-o {output} names one file but {count} inputs are given; give a folder")
        return Path(output)
    if Path(output).suffix:  # a path with a suffix names a file: one that aeroseg cannot write
        raise UserError(
            f"-o {output}: aeroseg writes .tif, .tiff or .png class rasters, not {Path(output).suffix}; give "
            "such a file name, or a folder (end a folder name that has a dot with /)"
        )
    return None


def check_folders(args: argparse.Namespace, out_file: Path | None) -> None:
    """Refuse, before any work, output folders that cannot be created (they are made when first written)."""
    folder = Path(args.output) if out_file is None else out_file.parent
    for path in [folder, *(Path(p).parent for p in (args.vector, args.json) if p)]:
        places.check_folder(path)


def stem_clashes(inputs: list[str]) -> dict[str, str]:
    """Inputs whose outputs would have the name of an earlier input's: input → the one-line reason."""
    seen: dict[str, str] = {}
    clashes = {}
    for path in inputs:
        other = seen.setdefault(places.input_stem(path), path)
        if other != path:
            clashes[path] = (
                f"{path}: its outputs would have the names of those of {other}; run it into another -o folder"
            )
    return clashes
