"""Python API of ``aeroseg predict``: segment an image file or array with a model and a class list.

>>> result = predict(model, "scene.tif", ["building", "road", "tree|forest", "water"], "scene_classes.tif")
>>> result.class_map, result.scores, result.class_names

The image features of recent windows are cached per model (:class:`aeroseg.inference.FeatureCache`), so
predicting the same image again with another class list runs only the class-dependent part of the model.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aeroseg.distributed.driver import predict_on_ray
from aeroseg.errors import UserError
from aeroseg.extras import require
from aeroseg.inference import FeatureCache
from aeroseg.precision import CHOICES, resolve
from aeroseg.prediction.checks import check_overlap, check_vector_options, no_crs_message
from aeroseg.prediction.classes import ClassList, make_class_list, parse_classes
from aeroseg.prediction.outputs import PredictionFiles
from aeroseg.prediction.paths import (
    input_stem,
    make_parent,
    output_file,
    output_paths,
    refuse_overwriting_input,
)
from aeroseg.prediction.streaming import WindowOptions, count_windows, segment_source
from aeroseg.prediction.vector import VectorWriter
from aeroseg.progress import progress as progress_bar
from aeroseg.raster import ArraySource, RasterSource, ReadOptions
from aeroseg.segmenter import Segmenter
from aeroseg.stac import StacInput, StacOptions, item_input

_CACHES: weakref.WeakKeyDictionary[Any, FeatureCache] = weakref.WeakKeyDictionary()


@dataclass
class PredictionResult:
    """The prediction of one image."""

    class_map: np.ndarray  # uint8 H×W class ids (``class_names`` order; 255 = nodata)
    scores: np.ndarray  # float32 H×W best class probability (NaN = nodata)
    class_names: list[str]  # name of every class id
    outputs: dict[str, Path] = field(default_factory=dict)  # files written: classes, scores, overlay, vector


def run_prediction(
    model: Segmenter,
    source: RasterSource,
    classes: ClassList,
    paths: dict[str, Path] | None,
    *,
    collect: bool,
    options: WindowOptions,
    device: torch.device,
    precision: str = "fp32",
    cache: FeatureCache | None = None,
    on_windows: Callable[[int], None] | None = None,
    settings: dict[str, Any] | None = None,
    cog: bool = True,
) -> tuple[PredictionResult | None, np.ndarray]:
    """Predict ``source`` and write the files of ``paths`` (see :func:`output_paths`).

    A class path ending in .png writes PNGs (the prediction is then held in memory), any other a GeoTIFF
    written window by window (made a Cloud-Optimized GeoTIFF when ``cog``). ``settings`` (what made the
    prediction) goes into the class raster's metadata. Returns the arrays when ``collect`` (else None) and
    the pixel count per id.
    """
    files = PredictionFiles(source, classes, paths, collect=collect, settings=settings, cog=cog)
    try:
        counts = segment_source(
            model,
            source,
            classes,
            files,
            options=options,
            device=device,
            precision=precision,
            cache=cache,
            on_windows=on_windows,
        )
        files.finish()
    except BaseException:
        files.abort()
        raise
    arrays = files.arrays
    result = None
    if collect and arrays is not None:
        result = PredictionResult(arrays.ids, arrays.confidence, classes.ids_to_names, dict(files.paths))
    return result, counts


def predict(
    model: Segmenter,
    image: str | Path | np.ndarray | torch.Tensor | Any,
    classes: Sequence[str | Sequence[str]] | str | ClassList,
    output: str | Path | None = None,
    *,
    bands: Sequence[int] | Sequence[str] | None = None,
    asset: str | None = None,
    scale: tuple[float, float] | None = None,
    percentiles: tuple[float, float] | None = None,
    nodata: float | None = None,
    background_threshold: float | None = None,
    window: int | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    scores: bool = False,
    overlay: bool = False,
    vector: str | Path | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    pixel_coordinates: bool = False,
    progress: bool = False,
    ray: str | None = None,
    cog: bool = True,
    settings: dict[str, Any] | None = None,
) -> PredictionResult:
    """Segment ``image`` into ``classes`` and return the class map, the scores and the class names.

    ``image``: a file path or URL, a STAC Item (a ``pystac.Item``, or a :class:`aeroseg.stac.StacInput` of
    :func:`aeroseg.stac.iter_inputs`: its asset ``asset``, else the role ``visual``, else ``data``; ``bands``
    may then name bands of its ``eo:bands``), or an array / tensor H×W, H×W×C or C×H×W; pixel values are
    mapped to [0, 1] by the rule of :mod:`aeroseg.raster` (uint8 /255, floats in [0, 1] as they are, floats
    in [0, 255] /255, anything else by percentiles), the same rule as ``aeroseg predict``. ``classes``:
    names, ``"tree|forest"`` synonym strings or lists of synonyms, a comma-separated string, or a
    :class:`ClassList`. ``output``: a .tif/.tiff/.png path, written exactly there, or a folder (an existing
    one, or a path ending in "/" or without a suffix; created when missing) that receives ``<stem>.tif``
    (``<stem>.png`` for a plain PNG or JPEG; a STAC Item's stem is its id). GeoTIFFs are Cloud-Optimized
    unless ``cog=False``. ``scores``, ``overlay`` (``<stem>_scores``, ``<stem>_overlay.png``) and ``vector``
    (.gpkg/.geojson/.parquet) are written beside it, and for a STAC Item ``<stem>.json``, the STAC Item of
    the outputs. An output that would overwrite the input is refused. Vectors of an image without a CRS
    need ``pixel_coordinates=True``. The other options are those of ``aeroseg predict`` (``window``: the
    model's own by default; ``precision`` "fp32", "bf16", "fp16" or "auto": bf16 where ``device`` has native bf16,
    else fp32). The model runs as it is (put it in eval mode). ``ray`` ("auto", "local" or a
    cluster address) runs the windows on a Ray cluster, the model copied once to each worker (an image file
    or URL only; needs ``pip install "aeroseg[ray]"``, see docs/distributed.md). ``settings``
    (:func:`aeroseg.prediction.settings.settings_of`) are recorded in the files as ``aeroseg predict``
    records them, so that it takes them as finished (one process only).
    """
    if not isinstance(classes, ClassList):
        classes = (
            parse_classes(classes, background_threshold=background_threshold)
            if isinstance(classes, str)
            else make_class_list(list(classes), background_threshold)
        )
    if output is None and (scores or overlay or vector is not None):
        raise UserError("scores, overlay and vector files need output=PATH for the class raster")
    if precision not in CHOICES:
        raise UserError(f"precision must be one of {', '.join(CHOICES)}, got {precision!r}")
    check_overlap(overlap)
    if vector is not None:
        check_vector_options(vector, min_area=min_area, simplify=simplify)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    precision = resolve(precision, device)
    options = WindowOptions(window=window or model.window, overlap=overlap, batch_size=batch_size)
    names = tuple(bands) if bands and any(isinstance(b, str) for b in bands) else None
    if names is not None or asset is not None or hasattr(image, "assets"):
        image = _stac_image(image, StacOptions(asset=asset, bands=names))
    read = ReadOptions(tuple(bands) if bands and names is None else None, scale, percentiles, nodata)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()  # H×W, H×W×C or C×H×W; the layout is read by ArraySource
    is_array = isinstance(image, np.ndarray)
    if ray is not None and is_array:
        raise UserError("ray= predicts an image file or URL; write the array to a file first")
    location = image if isinstance(image, str) else str(image)  # a StacInput stays one
    source = ArraySource(image, read) if is_array else RasterSource(location, read)
    cache = _CACHES.setdefault(model, FeatureCache())
    result = None
    if source.no_contrast:
        warnings.warn(source.no_contrast, stacklevel=2)
    with source:
        paths = None
        if output is not None:
            class_path = output_file(output, source, folder_stem=None if is_array else input_stem(location))
            item = isinstance(image, StacInput)
            paths = output_paths(class_path, scores=scores, overlay=overlay, item=item)
            refuse_overwriting_input(None if is_array else location, paths, vector)
            make_parent(class_path)
        if vector is not None and paths is not None and source.map_crs is None and not pixel_coordinates:
            raise UserError(no_crs_message(source.path, "pixel_coordinates=True"))
        if ray is None:
            with progress_bar(
                total=count_windows(source.height, source.width, options),
                disable=None if progress else True,
                unit="window",
            ) as bar:
                result, _ = run_prediction(
                    model,
                    source,
                    classes,
                    paths,
                    collect=True,
                    options=options,
                    device=device,
                    precision=precision,
                    cache=cache,
                    on_windows=bar.update,
                    cog=cog,
                    settings=settings,
                )
    if ray is not None:
        ids, confidence = predict_on_ray(
            model, location, classes, paths, read=read, options=options, precision=precision,
            device=device, address=ray, progress=progress, cog=cog,
        )  # fmt: skip
        result = PredictionResult(ids, confidence, classes.ids_to_names, dict(paths or {}))
    assert result is not None
    return _add_vector(result, paths, source.path, vector, min_area, simplify, pixel_coordinates)


def _stac_image(image: Any, options: StacOptions) -> StacInput:
    """The :class:`StacInput` of a pystac Item (its asset and bands chosen by ``options``), or of a
    StacInput whose asset or bands ``options`` change."""
    if isinstance(image, StacInput):
        require("pystac", "a STAC input")
        from pystac import Item

        image = Item.from_dict(image.item)
    if not hasattr(image, "assets") or not hasattr(image, "to_dict"):
        raise UserError("asset= and band names apply to STAC Items; give a pystac.Item or a StacInput")
    return item_input(image, options, image.get_self_href() or os.getcwd() + os.sep)


def _add_vector(
    result: PredictionResult,
    paths: dict[str, Path] | None,
    source: str,
    vector: str | Path | None,
    min_area: float,
    simplify: float,
    pixel_coordinates: bool = False,
) -> PredictionResult:
    """Write the polygons of the class raster into ``vector`` when asked for."""
    if vector is not None and paths is not None:
        make_parent(Path(vector))
        writer = VectorWriter(
            vector, min_area=min_area, simplify=simplify, pixel_coordinates=pixel_coordinates
        )
        try:
            writer.add(paths["classes"], source=source)
        except BaseException:
            writer.abort()
            raise
        writer.finish()
        result.outputs["vector"] = Path(vector)
    return result
