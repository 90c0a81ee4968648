"""The files ``aeroseg predict`` writes: class rasters, confidence rasters and overlays.

Every file is written under a hidden temporary name beside its final name and renamed when complete, so
an interrupted run never leaves a truncated output that a later run would skip.

- Class raster: uint8 class ids (see :mod:`aeroseg.prediction.classes` for the id scheme; 255 = nodata). A
  GeoTIFF keeps the input's CRS and transform (an image placed only by ground control points: its GCPs and
  their CRS, as they are), is tiled 256×256 and deflate-compressed, and carries a
  colour map, the class names as tags (``AEROSEG_CLASSES``: JSON list by id; ``CLASS_<id>``: name) and a
  band description. A PNG (for a plain PNG or JPEG input) is a palette image with the same JSON in a text
  chunk and id 255 transparent.
- Confidence (``--scores``): a second file ``<stem>_scores``: float32 GeoTIFF of the best class probability
  (nodata NaN), or an 8-bit PNG of round(255·probability) (nodata 0).
- The GeoTIFFs are Cloud-Optimized (``cog``, the default): written window by window into a tiled temporary
  GeoTIFF, then copied by GDAL's COG driver, which adds the overviews (nearest for the class ids, average
  for the scores) and lays the file out for range requests (a web map or tile server reads it as it is).
  ``cog=False`` keeps the tiled GeoTIFF without overviews and without the copy.
- STAC inputs (:class:`aeroseg.stac.StacInput`): the class raster records the input Item
  (:func:`aeroseg.stac.input_tags`), and ``<stem>.json`` is its outputs' STAC Item.
- Overlay (``--overlay``): ``<stem>_overlay.png``, the image with the classes blended in and a legend, at
  most :data:`OVERLAY_SIDE` pixels a side.
- Every raster file of ``aeroseg predict`` (class raster, scores, overlay) records the settings that made it
  (``AEROSEG_SETTINGS``, a GeoTIFF tag or a PNG text chunk): a rerun takes a file as finished only when
  its settings are the run's.
"""

from __future__ import annotations

import colorsys
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from PIL import Image, ImageDraw, PngImagePlugin
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from aeroseg import stac
from aeroseg.atomic import atomic, temporary_path
from aeroseg.prediction.classes import BACKGROUND, NODATA, ClassList
from aeroseg.prediction.legend import legend_font

OVERLAY_SIDE = 2048
CLASSES_TAG = "AEROSEG_CLASSES"
SETTINGS_TAG = "AEROSEG_SETTINGS"  # JSON of what made the prediction: classes, model, reading and windows
# 20 distinct colours (after Sasha Trubetskoy's "List of 20 simple, distinct colors").
_DISTINCT = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
]  # fmt: skip


def class_colours(names: list[str]) -> list[tuple[int, int, int]]:
    """One RGB colour per class id: black for background, distinct colours for the others."""
    colours, k = [], 0
    for name in names:
        if name == BACKGROUND and not colours:
            colours.append((0, 0, 0))
            continue
        if k < len(_DISTINCT):
            colours.append(_DISTINCT[k])
        else:  # golden-ratio hues beyond the table
            r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1, 0.65, 0.95)
            colours.append((round(r * 255), round(g * 255), round(b * 255)))
        k += 1
    return colours


def settings_tag(settings: dict | None) -> dict[str, str]:
    """The tag every file of a prediction carries: the settings that made it (see :func:`read_settings`)."""
    return {} if settings is None else {SETTINGS_TAG: json.dumps(settings, sort_keys=True)}


def class_tags(classes: ClassList, source: str, settings: dict | None = None) -> dict[str, str]:
    names = classes.ids_to_names
    tags = {CLASSES_TAG: json.dumps(names), "AEROSEG_NODATA_CLASS": str(NODATA), "AEROSEG_SOURCE": source}
    tags.update(stac.input_tags(source))
    tags.update(settings_tag(settings))
    if classes.background_threshold is not None:
        tags["AEROSEG_BACKGROUND_THRESHOLD"] = str(classes.background_threshold)
    tags.update({f"CLASS_{i}": name for i, name in enumerate(names)})
    return tags


class GeoTiffWriter:
    """Class raster (and optional confidence raster) written window by window: the sink of a prediction.
    ``cog``: the files are made Cloud-Optimized GeoTIFFs by :meth:`finish` (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        profile: dict,
        classes: ClassList,
        *,
        source: str,
        scores_path: Path | None = None,
        settings: dict | None = None,
        cog: bool = True,
    ) -> None:
        self.paths = [path] + ([scores_path] if scores_path else [])
        self.cog = cog
        self._tmp = [temporary_path(p) for p in self.paths]
        base = dict(profile, driver="GTiff", count=1, tiled=True, blockxsize=256, blockysize=256)
        base.update(compress="deflate", BIGTIFF="IF_SAFER")
        self._files: list = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                self._open_classes(self._tmp[0], base, classes, source, settings)
                if scores_path is not None:
                    scores = dict(base, dtype="float32", nodata=float("nan"), predictor=3)
                    self._files.append(rasterio.open(self._tmp[1], "w", **scores))
                    self._files[1].update_tags(
                        AEROSEG_SOURCE=source,
                        AEROSEG_SCORE="best class probability",
                        **stac.input_tags(source),
                        **settings_tag(settings),
                    )
                    self._files[1].set_band_description(1, "confidence: best class probability")
            except BaseException:
                self.abort()
                raise

    def _open_classes(
        self, path: Path, profile: dict, classes: ClassList, source: str, settings: dict | None
    ) -> None:
        # The colour map goes in before any pixel: GDAL cannot change a TIFF's photometric tag afterwards.
        file = rasterio.open(path, "w", **profile, dtype="uint8", nodata=NODATA, photometric="palette")
        self._files.append(file)
        names = classes.ids_to_names
        colours = class_colours(names)
        file.write_colormap(
            1, {i: (*colours[i], 255) if i < len(names) else (0, 0, 0, 0) for i in range(256)}
        )
        file.update_tags(**class_tags(classes, source, settings))
        description = ", ".join(f"{i}={n}" for i, n in enumerate(names))
        file.set_band_description(1, f"class id: {description}, {NODATA}=nodata")

    def write(self, window: Window, ids: np.ndarray, confidence: np.ndarray) -> None:
        self._files[0].write(ids, 1, window=window)
        if len(self._files) > 1:
            self._files[1].write(confidence, 1, window=window)

    def finish(self) -> None:
        for file in self._files:
            file.close()
        try:
            for k, (tmp, path) in enumerate(zip(self._tmp, self.paths, strict=True)):
                if self.cog:
                    with atomic(path) as cog:  # the scores (k = 1) are averaged into their overviews
                        to_cog(tmp, cog, scores=k == 1)
                else:
                    os.replace(tmp, path)
        finally:
            for tmp in self._tmp:
                tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        for file in self._files:
            file.close()
        for tmp in self._tmp:
            tmp.unlink(missing_ok=True)


def to_cog(tiff: Path, cog: Path, *, scores: bool) -> None:
    """Copy ``tiff`` into the Cloud-Optimized GeoTIFF ``cog`` (GDAL's COG driver: 256² deflate tiles,
    overviews down to one tile: nearest for class ids, average and the float predictor for ``scores``),
    keeping its colour map, tags, nodata and band description."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        rasterio.shutil.copy(
            tiff, cog, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES" if scores else "NO", BLOCKSIZE=256,
            OVERVIEW_RESAMPLING="AVERAGE" if scores else "NEAREST", BIGTIFF="IF_SAFER",
        )  # fmt: skip


class ArrayWriter:
    """Collects the whole prediction in memory (the Python API and PNG outputs)."""

    def __init__(self, height: int, width: int) -> None:
        self.ids = np.full((height, width), NODATA, dtype=np.uint8)
        self.confidence = np.full((height, width), np.nan, dtype=np.float32)

    def write(self, window: Window, ids: np.ndarray, confidence: np.ndarray) -> None:
        rows, cols = window.toslices()
        self.ids[rows, cols] = ids
        self.confidence[rows, cols] = confidence


def write_class_png(
    path: Path, ids: np.ndarray, classes: ClassList, *, source: str, settings: dict | None = None
) -> None:
    """A palette PNG of class ids with the class names in a text chunk; id 255 is transparent."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    colours = class_colours(classes.ids_to_names)
    palette[: len(colours)] = colours
    image = Image.fromarray(ids, mode="P")
    image.putpalette(palette.ravel().tolist())
    info = PngImagePlugin.PngInfo()
    for key, value in class_tags(classes, source, settings).items():
        info.add_text(key, value)
    with atomic(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info, transparency=NODATA)


def read_settings(class_raster: Path) -> dict | None:
    """The settings a class raster written by ``aeroseg predict`` records (None when it records none)."""
    try:
        if class_raster.suffix.lower() == ".png":
            with Image.open(class_raster) as image:
                text = getattr(image, "text", {}).get(SETTINGS_TAG)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(class_raster) as ds:
                    text = ds.tags().get(SETTINGS_TAG)
        return json.loads(text) if text else None
    except (OSError, ValueError, RasterioError):
        return None


def _png_info(settings: dict | None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in settings_tag(settings).items():
        info.add_text(key, value)
    return info


def write_scores_png(path: Path, confidence: np.ndarray, settings: dict | None = None) -> None:
    """An 8-bit PNG of round(255 · confidence); nodata is 0. ``settings``: see :func:`settings_tag`."""
    values = np.nan_to_num(confidence, nan=0.0)
    image = Image.fromarray((values * 255).round().astype(np.uint8), mode="L")
    with atomic(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=_png_info(settings))


def write_overlay(
    path: Path,
    rgb: np.ndarray,
    ids: np.ndarray,
    names: list[str],
    alpha: float = 0.5,
    settings: dict | None = None,
) -> None:
    """``rgb`` (h×w×3 uint8) with the class colours of ``ids`` (h×w) blended in and a legend on the right
    (``settings``, what made the prediction, in a text chunk: see :func:`settings_tag`).

    The legend runs in as many columns as the image's height needs (254 classes beside a 512-pixel image:
    six columns, not a 5,000-pixel strip). Names are drawn with the first installed font that has glyphs for
    all of them (:data:`LEGEND_FONTS`: Noto CJK, Noto, DejaVu, Liberation); names no installed font covers
    are named in a warning, since they show as boxes.
    """
    colours = np.zeros((256, 3), dtype=np.float32)
    colours[: len(names)] = class_colours(names)
    labelled = (ids != NODATA)[..., None]
    blended = np.where(labelled, (1 - alpha) * rgb + alpha * colours[ids], rgb).round().astype(np.uint8)
    font = legend_font(names)
    swatch, pad = 14, 6
    row = swatch + pad
    rows = max(1, min(len(names), (max(rgb.shape[0], 8 * row) - pad) // row))
    columns = -(-len(names) // rows)  # ceil
    column_width = 2 * pad + swatch + max(int(font.getlength(name)) for name in names)
    legend_h = pad + rows * row
    canvas = Image.new(
        "RGB", (rgb.shape[1] + pad + columns * column_width, max(rgb.shape[0], legend_h)), "white"
    )
    canvas.paste(Image.fromarray(blended), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(names):
        x = rgb.shape[1] + pad + (i // rows) * column_width
        y = pad + (i % rows) * row
        draw.rectangle(
            (x, y, x + swatch, y + swatch), fill=tuple(int(c) for c in colours[i]), outline="black"
        )
        draw.text((x + swatch + pad, y), name, fill="black", font=font)
    with atomic(path) as tmp:
        canvas.save(tmp, format="PNG", pnginfo=_png_info(settings))


class PredictionFiles:
    """The sink of one prediction: the files of ``paths`` (see :func:`output_paths`) and, when ``collect``,
    the arrays. A class path ending in .png writes PNGs at :meth:`finish` (the prediction is then held in
    memory), any other a GeoTIFF window by window (a COG when ``cog``); the overlay is drawn from the
    finished class raster, and the STAC Item (``item``, a STAC input's) written last. ``settings`` (what made
    the prediction) goes into the class raster's metadata."""

    def __init__(
        self,
        source: Any,
        classes: ClassList,
        paths: dict[str, Path] | None,
        *,
        collect: bool,
        settings: dict[str, Any] | None = None,
        cog: bool = True,
    ) -> None:
        self.source, self.classes, self.paths, self.settings = source, classes, paths or {}, settings
        self.cog = cog
        self.class_path = self.paths.get("classes")
        as_png = self.class_path is not None and self.class_path.suffix.lower() == ".png"
        self.arrays = ArrayWriter(source.height, source.width) if collect or as_png else None
        self.geotiff = None
        if self.class_path is not None and not as_png:
            profile = dict(height=source.height, width=source.width, **source.georeferencing())
            self.geotiff = GeoTiffWriter(
                self.class_path,
                profile,
                classes,
                source=source.path,
                scores_path=self.paths.get("scores"),
                settings=settings,
                cog=cog,
            )

    def write(self, window: Window, ids: np.ndarray, confidence: np.ndarray) -> None:
        for sink in (self.arrays, self.geotiff):
            if sink is not None:
                sink.write(window, ids, confidence)

    def abort(self) -> None:
        if self.geotiff is not None:
            self.geotiff.abort()

    def finish(self) -> None:
        """Put the files in place (each written under a temporary name, then renamed)."""
        if self.geotiff is not None:
            self.geotiff.finish()
        elif self.class_path is not None and self.arrays is not None:
            write_class_png(
                self.class_path,
                self.arrays.ids,
                self.classes,
                source=self.source.path,
                settings=self.settings,
            )
            if "scores" in self.paths:
                write_scores_png(self.paths["scores"], self.arrays.confidence, self.settings)
        if self.class_path is not None:
            write_side_files(
                self.source, self.classes, self.paths, cog=self.cog and self.geotiff is not None,
                settings=self.settings,
            )  # fmt: skip


def write_side_files(
    source: Any, classes: ClassList, paths: dict[str, Path], *, cog: bool, settings: dict | None = None
) -> None:
    """The files drawn from a finished class raster: the overlay and the STAC Item (of a STAC input), when
    ``paths`` names them; ``cog``: whether the rasters are Cloud-Optimized (said in the Item); ``settings``:
    recorded in the overlay as in the class raster."""
    if "overlay" in paths:
        write_overlay_of(source, paths["classes"], paths["overlay"], classes.ids_to_names, settings)
    if "item" in paths and isinstance(source.path, stac.StacInput):
        names = classes.ids_to_names
        files = {k: p for k, p in paths.items() if k != "item"}
        stac.write_output_item(
            paths["item"], source.path, files, names, class_colours(names), nodata=NODATA, cog=cog
        )


def write_overlay_of(
    source: Any, class_path: Path, overlay_path: Path, names: list[str], settings: dict | None = None
) -> None:
    """The overlay PNG of a finished class raster over the input's overview (at most OVERLAY_SIDE a side)."""
    rgb = source.read_overview(OVERLAY_SIDE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(class_path) as ds:
            ids = ds.read(1, out_shape=rgb.shape[:2], resampling=Resampling.nearest)
    write_overlay(overlay_path, rgb, ids, names, settings=settings)
