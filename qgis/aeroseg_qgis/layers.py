"""Raster layers in and out: the file of a layer, an extent cut on its pixel grid, and results loaded as
layers styled with the class names and colours that ``aeroseg predict`` writes into every class GeoTIFF
(``AEROSEG_CLASSES``: the names by id; the colour map; 255 = nodata)."""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable

from osgeo import gdal
from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsFillSymbol,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from .temporary import temporary_path
from .window import Box, Window

CLASSES_TAG = "AEROSEG_CLASSES"
OPACITY = 0.6  # of the class layers over the image
POLYGON_ALPHA = 150  # of the polygon fills, 0-255

ClassTable = list[tuple[int, str, tuple[int, int, int]]]  # id, name, RGB


class LayerError(Exception):
    """A layer the plugin cannot use, or a result it cannot read; one line."""


def layer_file(layer: QgsRasterLayer) -> str:
    """The file (or GDAL path) of a raster layer that aeroseg can read."""
    if layer.providerType() != "gdal":
        raise LayerError(
            f"{layer.name()} is a {layer.providerType()} layer; aeroseg reads raster files (GDAL)"
        )
    path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or layer.source()
    if not (os.path.exists(path) or path.startswith("/vsi")):
        raise LayerError(f"the file of {layer.name()}, {path}, does not exist")
    return path


def layer_box(layer: QgsRasterLayer) -> Box:
    extent = layer.extent()
    return extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()


def cut_window(path: str, window: Window, target: str, is_canceled: Callable[[], bool] = bool) -> str:
    """The pixels ``window`` (column, row, width, height) of ``path`` on its grid, with its CRS, bands and
    nodata: a GDAL VRT (no pixel copied) when ``target`` ends in .vrt, else a tiled GeoTIFF (written under
    a temporary name; cancelled when ``is_canceled()`` turns true)."""
    if target.endswith(".vrt"):
        dataset = gdal.Translate(target, path, format="VRT", srcWin=list(window))
        if dataset is None:
            raise LayerError(f"cannot cut {path}: {gdal.GetLastErrorMsg() or 'GDAL failed'}")
        dataset = None  # written on close
        return target
    partial = str(temporary_path(target))
    try:
        dataset = gdal.Translate(
            partial, path, format="GTiff", srcWin=list(window), creationOptions=["TILED=YES", "BIGTIFF=IF_SAFER"],
            callback=lambda *progress: 0 if is_canceled() else 1,
        )  # fmt: skip
        if dataset is None:
            if is_canceled():
                raise LayerError("cancelled")
            raise LayerError(f"cannot cut {path}: {gdal.GetLastErrorMsg() or 'GDAL failed'}")
        dataset = None  # written on close
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


def class_table(path: str) -> ClassTable:
    """The classes of an aeroseg class raster: (id, name, colour) from its metadata and colour map."""
    dataset = gdal.Open(path)
    if dataset is None:
        raise LayerError(f"cannot open {path}: {gdal.GetLastErrorMsg() or 'GDAL failed'}")
    text = dataset.GetMetadataItem(CLASSES_TAG)
    if not text:
        raise LayerError(f"{path} is not an aeroseg class raster (no {CLASSES_TAG} in its metadata)")
    colours = dataset.GetRasterBand(1).GetColorTable()
    table = []
    for i, name in enumerate(json.loads(text)):
        rgb = tuple(colours.GetColorEntry(i)[:3]) if colours is not None else (128, 128, 128)
        table.append((i, name, rgb))
    return table


def record_source(path: str, source: str, window: Window | None) -> None:
    """Name the layer's own file (not the VRT that was cut from it) as the source of the class raster,
    and the window of it that was segmented."""
    dataset = gdal.Open(path, gdal.GA_Update)
    if dataset is None:
        raise LayerError(f"cannot update {path}: {gdal.GetLastErrorMsg() or 'GDAL failed'}")
    dataset.SetMetadataItem("AEROSEG_SOURCE", source)
    if window is not None:
        dataset.SetMetadataItem(
            "AEROSEG_SOURCE_WINDOW", ",".join(map(str, window))
        )  # column,row,width,height
    dataset = None  # written on close


def style_classes(layer: QgsRasterLayer, table: ClassTable | None = None) -> None:
    """Paletted rendering of a class raster: each id in its colour, labelled with its class name."""
    table = class_table(layer.source()) if table is None else table
    classes = [QgsPalettedRasterRenderer.Class(i, QColor(*rgb), name) for i, name, rgb in table]
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)
    renderer.setOpacity(OPACITY)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_polygons(layer: QgsVectorLayer, table: ClassTable) -> None:
    """Polygons categorised by their ``class`` attribute, in the colours of the class raster."""
    categories = []
    for _, name, (r, g, b) in table:
        symbol = QgsFillSymbol.createSimple(
            {"color": f"{r},{g},{b},{POLYGON_ALPHA}", "outline_color": f"{r},{g},{b}", "outline_width": "0.2"}
        )
        categories.append(QgsRendererCategory(name, symbol, name))
    layer.setRenderer(QgsCategorizedSymbolRenderer("class", categories))
    layer.triggerRepaint()


def result_name(table: ClassTable, limit: int = 60) -> str:
    """The layer name of a result: aeroseg and its class names."""
    name = "aeroseg: " + ", ".join(n for _, n, _ in table)
    return name if len(name) <= limit else name[: limit - 1] + "…"


class _Styler(QgsProcessingLayerPostProcessorInterface):
    def __init__(self, style: Callable[[QgsMapLayer], None]) -> None:
        super().__init__()
        self._style = style

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 (QGIS's name)
        self._style(layer)


_STYLERS: deque = deque(maxlen=64)  # QGIS keeps a bare pointer to a post-processor: Python must keep it alive


def style_when_loaded(
    context: QgsProcessingContext, output: str, name: str, style: Callable[[QgsMapLayer], None]
) -> None:
    """Style the layer of ``output`` (and name it) when Processing loads it into the project."""
    if not output or not context.willLoadLayerOnCompletion(output):
        return
    details = context.layerToLoadOnCompletionDetails(output)
    details.name, details.forceName = name, True
    styler = _Styler(style)
    _STYLERS.append(styler)
    details.setPostProcessor(styler)
