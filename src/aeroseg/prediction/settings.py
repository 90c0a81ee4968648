"""What made a prediction: the settings every class raster of ``aeroseg predict`` records
(``AEROSEG_SETTINGS``), so that a rerun skips outputs finished with the same settings and refuses those made
otherwise (unless ``--overwrite``). Shared by the single-process and the Ray runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aeroseg.errors import UserError
from aeroseg.prediction.classes import ClassList
from aeroseg.prediction.outputs import read_settings
from aeroseg.registry import ModelRequest, identity


def prediction_settings(
    args: argparse.Namespace, classes: ClassList, request: ModelRequest
) -> dict[str, Any]:
    """What decides the pixels of a prediction, recorded in every class raster (``AEROSEG_SETTINGS``):
    outputs made with other settings are not taken as finished."""
    return {
        "classes": classes.ids_to_names,
        "synonyms": [list(s) for s in classes.synonyms],
        "background_threshold": classes.background_threshold,
        "model": identity(request),
        "bands": list(args.bands) if args.bands else None,
        "scale": list(args.scale) if args.scale else None,
        "percentiles": list(args.percentiles) if args.percentiles else None,
        "nodata": None if args.nodata is None else repr(args.nodata),  # a string: NaN != NaN after JSON
        "window": args.window,
        "overlap": args.overlap,
        "precision": args.precision,
    }


_SETTING_GROUPS = {"classes": "classes", "synonyms": "classes", "background_threshold": "classes"}


def _differences(previous: dict[str, Any] | None, settings: dict[str, Any]) -> str:
    if previous is None:
        return "by another program or an older aeroseg (it records no settings)"
    keys = [k for k in settings if previous.get(k) != settings[k]]
    names = dict.fromkeys(_SETTING_GROUPS.get(k, k) for k in keys) or {"settings": None}
    return "with other " + ", ".join(
        f"--{n.replace('_', '-')}" if n not in ("classes", "model", "settings") else n for n in names
    )


def finished(class_path: Path, paths: dict[str, Path], settings: dict[str, Any], *, overwrite: bool) -> bool:
    """Whether the outputs ``paths`` all exist, made with ``settings`` (the input is then skipped); a
    class raster made otherwise is refused unless ``overwrite``."""
    if overwrite or not class_path.exists():
        return False
    previous = read_settings(class_path)
    if previous != settings:
        raise UserError(
            f"{class_path} exists, made {_differences(previous, settings)}; pass --overwrite to "
            "redo it, or choose another -o"
        )
    return all(p.exists() for p in paths.values())
