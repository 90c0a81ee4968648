"""Where the files of a prediction go: one named file or ``<folder>/<stem>.tif``, and the files beside it.

A single output path ending in .tif/.tiff/.png is written exactly there (the convention of GDAL and rio);
anything else (an existing folder, a path ending in "/", a name without a raster suffix) is a folder that
receives ``<stem>.tif``, or ``<stem>.png`` for a plain PNG or JPEG input. Scores and overlays go beside the
class raster. No output may be the input file, and folders are checked before any work and created when
the first file is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from aeroseg.errors import UserError
from aeroseg.raster import RasterSource, is_url
from aeroseg.stac import StacInput


def output_paths(class_path: Path, *, scores: bool, overlay: bool, item: bool = False) -> dict[str, Path]:
    """Paths of the files of one prediction: ``classes`` and, when asked for, ``scores``, ``overlay`` and
    ``item`` (the STAC Item of the outputs, ``<stem>.json``: see :func:`aeroseg.stac.write_output_item`)."""
    paths = {"classes": class_path}
    if scores:
        paths["scores"] = class_path.with_name(f"{class_path.stem}_scores{class_path.suffix}")
    if overlay:
        paths["overlay"] = class_path.with_name(f"{class_path.stem}_overlay.png")
    if item:
        paths["item"] = class_path.with_suffix(".json")
    return paths


RASTER_SUFFIXES = (".tif", ".tiff", ".png")
PNG_DRIVERS = ("PNG", "JPEG")


def input_stem(path: str) -> str:
    """The name of an input's outputs: its file name without the suffix (URLs: the last path part; STAC
    inputs: the Item id)."""
    if isinstance(path, StacInput):
        return path.stem
    if is_url(path):
        name = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    else:
        name = os.path.basename(path.rstrip("/"))
    return os.path.splitext(name)[0] or "image"


def is_folder_output(output: str | Path) -> bool:
    """Whether ``output`` names a folder: an existing one, a path ending in "/", or a name without a suffix."""
    text = str(output)
    if os.path.isdir(text) or text.endswith(("/", os.sep)):
        return True
    return Path(text).suffix.lower() not in RASTER_SUFFIXES


def class_suffix(source: RasterSource) -> str:
    """.png for a plain PNG or JPEG input (no georeferencing), .tif for everything else."""
    return ".png" if source.driver in PNG_DRIVERS and not source.georeferenced else ".tif"


def output_file(output: str | Path, source: RasterSource, *, folder_stem: str | None) -> Path:
    """The class raster path of ``output``: that file (.tif/.tiff/.png), or ``<folder>/<stem>.tif|.png``."""
    if not is_folder_output(output):
        if os.path.isdir(output):
            raise UserError(f"output {output} is a folder")
        return Path(output)
    if Path(output).exists() and not Path(output).is_dir():
        raise UserError(
            f"output {output} is an existing file, not a folder; give a .tif/.png path or a folder"
        )
    if folder_stem is None:
        raise UserError(f"an array has no file name: give output=FILE.tif (or .png), not the folder {output}")
    return Path(output) / f"{folder_stem}{class_suffix(source)}"


def make_parent(path: Path) -> None:
    """Create the folder of ``path`` (and its parents); a :class:`UserError` when that is impossible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(
            f"cannot create the folder {path.parent}: a file of that name is in the way"
        ) from None
    except OSError as error:
        raise UserError(f"cannot create the folder {path.parent}: {error.strerror or error}") from None


def check_folder(folder: Path) -> None:
    """Raise :class:`UserError` unless ``folder`` exists or can be created (nothing is created yet)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create the folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into {existing} (permission denied); choose another output")


def refuse_overwriting_input(
    image: str | None, paths: dict[str, Path], vector: str | Path | None = None
) -> None:
    """Raise :class:`UserError` when an output file (``paths`` or ``vector``) is the input file ``image``."""
    if image is None or is_url(image) or not os.path.exists(image):
        return
    for path in [*paths.values(), *([Path(vector)] if vector is not None else [])]:
        if path.exists() and os.path.samefile(path, image) or os.path.abspath(path) == os.path.abspath(image):
            raise UserError(f"the output {path} would overwrite the input {image}; write it elsewhere")
