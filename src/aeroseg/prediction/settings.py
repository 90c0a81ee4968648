"""What made a prediction: the settings every class raster of ``aeroseg predict`` records
(``AEROSEG_SETTINGS``), so that a rerun skips outputs finished with the same settings and refuses those made
otherwise (unless ``--overwrite``). Shared by the single-process and the Ray runs."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aeroseg.errors import UserError
from aeroseg.fingerprint import weights_digest
from aeroseg.prediction.classes import ClassList
from aeroseg.prediction.outputs import read_settings
from aeroseg.prediction.paths import output_paths
from aeroseg.registry import DEFAULT_SEGMENTER, ModelRequest, checkpoint_folder


def prediction_settings(
    args: argparse.Namespace, classes: ClassList, request: ModelRequest
) -> dict[str, Any]:
    """The settings of an ``aeroseg predict`` command line (see :func:`settings_of`)."""
    return settings_of(
        classes, request, bands=args.bands, scale=args.scale, percentiles=args.percentiles,
        nodata=args.nodata, window=args.window, overlap=args.overlap, precision=args.precision,
    )  # fmt: skip


def settings_of(
    classes: ClassList,
    request: ModelRequest,
    *,
    window: int,
    bands: Sequence[int | str] | None = None,
    scale: tuple[float, float] | None = None,
    percentiles: tuple[float, float] | None = None,
    nodata: float | None = None,
    overlap: float = 0.25,
    precision: str = "fp32",
) -> dict[str, Any]:
    """What decides the pixels of a prediction, recorded in every file it writes (``AEROSEG_SETTINGS``):
    outputs made with other settings are not taken as finished. The defaults are ``aeroseg predict``'s."""
    return {
        "classes": classes.ids_to_names,
        "synonyms": [list(s) for s in classes.synonyms],
        "background_threshold": classes.background_threshold,
        "model": model_identity(request),
        "bands": list(bands) if bands else None,
        "scale": list(scale) if scale else None,
        "percentiles": list(percentiles) if percentiles else None,
        "nodata": None if nodata is None else repr(nodata),  # a string: NaN != NaN after JSON
        "window": window,
        "overlap": overlap,
        "precision": precision,
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
    """Whether the outputs ``paths`` all exist, each made with ``settings`` (the input is then skipped); a
    class raster made otherwise is refused unless ``overwrite``."""
    if overwrite or not class_path.exists():
        return False
    previous = read_settings(class_path)
    if previous != settings:
        raise UserError(
            f"{class_path} exists, made {_differences(previous, settings)}; pass --overwrite to "
            "redo it, or choose another -o"
        )
    return all(_made_with(kind, path, settings, paths) for kind, path in paths.items())


def _made_with(kind: str, path: Path, settings: dict[str, Any], paths: dict[str, Path]) -> bool:
    """Whether the output ``path`` exists and was made with ``settings`` (rasters: their settings tag; the
    STAC Item: it lists the assets of ``paths``)."""
    if not path.exists():
        return False
    if kind == "item":
        return set(_item_assets(path) or ()) == set(paths) - {"item"}
    return kind == "classes" or read_settings(path) == settings


def _item_assets(path: Path) -> dict[str, Any] | None:
    try:
        assets = json.loads(path.read_text(encoding="utf-8")).get("assets")
    except (OSError, ValueError, AttributeError):
        return None
    return assets if isinstance(assets, dict) else None


def remove_side_files(class_path: Path, paths: dict[str, Path], image: str) -> list[Path]:
    """Remove the files an earlier prediction wrote beside ``class_path`` (scores, overlay, the STAC Item of
    its outputs) that the outputs ``paths`` of this run do not include (``--overwrite``); never ``image``.
    Returns the removed paths."""
    every = output_paths(class_path, scores=True, overlay=True, item=True)
    removed = []
    for kind, path in every.items():
        if kind in paths or not path.is_file() or _is_input(path, image):
            continue
        if kind == "item":  # only a STAC Item of these outputs, not any JSON of that name
            classes = (_item_assets(path) or {}).get("classes")
            if not isinstance(classes, dict) or classes.get("href") != f"./{class_path.name}":
                continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _is_input(path: Path, image: str) -> bool:
    try:
        return os.path.samefile(path, image)
    except (OSError, TypeError):
        return False


def model_identity(request: ModelRequest) -> str:
    """A short text that changes when the model :func:`segmenter` loads does: the content digest of a local
    checkpoint (:func:`aeroseg.fingerprint.weights_digest`; the same weights under another path give the
    same text), or the preset, its backbone sources (local ones by digest) and its overrides."""
    if request.checkpoint is None:
        parts = [request.preset or DEFAULT_SEGMENTER]
        parts += [f"{k}={_by_content(v)}" for k, v in sorted(request.weights.items())]
        if request.overrides:
            parts.append("overrides=" + json.dumps(request.overrides, sort_keys=True, default=str))
        return " ".join(parts)
    path = Path(request.checkpoint).expanduser()
    if path.is_dir():
        path = checkpoint_folder(path)
    return f"checkpoint {_by_content(str(path))}"


def _by_content(source: str) -> str:
    """Local weights by their content digest (whatever path names them), anything else (a hub id) as it is."""
    return source if source == "none" else weights_digest(source) or source
