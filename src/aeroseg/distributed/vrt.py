"""A scene as a GDAL VRT over the part files its workers wrote (``<stem>.vrt``, ``<stem>_scores.vrt``).

The parts are bands of whole pixel rows of one scene, GeoTIFFs with the scene's georeferencing shifted to
their first row and the same metadata; the VRT places each at its rows (paths relative to the VRT, so the
folder can move) and repeats the first part's CRS, geotransform, tags, band description, nodata and colour
map: GDAL, rasterio and QGIS read the VRT as the scene's one raster (GDAL VRT format:
https://gdal.org/drivers/raster/vrt.html).
"""

from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from aeroseg.atomic import atomic

_TYPES = {"uint8": "Byte", "float32": "Float32"}


def write_vrt(path: Path, parts: list[tuple[Path, int]], height: int) -> None:
    """Write ``path``: a VRT of ``height`` rows over ``parts``, each (file, first scene row), top to bottom."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(parts[0][0]) as first:
            root = _dataset(first, parts, height, path.parent)
    ET.indent(root)
    with atomic(path) as tmp:
        tmp.write_bytes(ET.tostring(root, encoding="utf-8") + b"\n")


def _dataset(
    first: rasterio.DatasetReader, parts: list[tuple[Path, int]], height: int, folder: Path
) -> ET.Element:
    root = ET.Element("VRTDataset", rasterXSize=str(first.width), rasterYSize=str(height))
    if first.crs is not None:
        ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = first.crs.to_wkt()
    if first.crs is not None or not first.transform.is_identity:
        top = first.transform @ rasterio.Affine.translation(0, -parts[0][1])
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in top.to_gdal())
    _metadata(root, first.tags())
    dtype = first.dtypes[0]
    band = ET.SubElement(root, "VRTRasterBand", dataType=_TYPES[dtype], band="1")
    if first.descriptions[0]:
        ET.SubElement(band, "Description").text = first.descriptions[0]
    _metadata(band, first.tags(1))
    if first.nodata is not None:
        nodata = first.nodata
        ET.SubElement(band, "NoDataValue").text = "nan" if math.isnan(nodata) else repr(nodata)
    if dtype == "uint8" and first.colorinterp[0].name == "palette":
        ET.SubElement(band, "ColorInterp").text = "Palette"
        table = ET.SubElement(band, "ColorTable")
        for _, rgba in sorted(first.colormap(1).items()):
            ET.SubElement(table, "Entry", **{f"c{i + 1}": str(v) for i, v in enumerate(rgba)})
    block = first.block_shapes[0]
    for file, row in parts:
        with rasterio.open(file) as part:
            rows = part.height
        source = ET.SubElement(band, "SimpleSource")
        relative = os.path.relpath(file, folder)
        ET.SubElement(source, "SourceFilename", relativeToVRT="1").text = relative
        ET.SubElement(source, "SourceBand").text = "1"
        ET.SubElement(
            source, "SourceProperties", RasterXSize=str(first.width), RasterYSize=str(rows),
            DataType=_TYPES[dtype], BlockXSize=str(block[1]), BlockYSize=str(block[0]),
        )  # fmt: skip
        window = dict(xOff="0", xSize=str(first.width), ySize=str(rows))
        ET.SubElement(source, "SrcRect", yOff="0", **window)
        ET.SubElement(source, "DstRect", yOff=str(row), **window)
    return root


def _metadata(parent: ET.Element, tags: dict[str, str]) -> None:
    if tags:
        metadata = ET.SubElement(parent, "Metadata")
        for key, value in tags.items():
            ET.SubElement(metadata, "MDI", key=key).text = value
