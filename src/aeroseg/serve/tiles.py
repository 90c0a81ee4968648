"""Map tiles of images and class rasters, 256×256 RGBA PNGs.

A georeferenced raster (any CRS) is cut into Web Mercator tiles by rio-tiler, which reprojects on the fly
for display only; the segmentation always runs on the raster's own pixels. A raster without a CRS (a plain
PNG or JPEG) is shown in pixel coordinates (Leaflet's ``CRS.Simple``): at zoom ``z`` one tile covers
256·2^-z image pixels, so zoom 0 is one screen pixel per image pixel and negative zooms zoom out.

Files are opened with the driver found when the raster was first opened (:mod:`aeroseg.serve.formats`).
The lowest zoom of a raster is where one tile would read more than the server's tile limit
(:func:`aeroseg.serve.limits.lowest_zoom`).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from rio_tiler.errors import NoOverviewWarning, TileOutsideBounds
from rio_tiler.io import Reader

from aeroseg.errors import UserError
from aeroseg.serve.formats import open_known
from aeroseg.serve.limits import TILE, lowest_zoom

WGS84 = CRS.from_epsg(4326)
PIXEL_MAX_ZOOM = 3  # a plain image can be magnified 8×
MAX_ZOOM = 30  # tile addresses beyond this zoom (either way) are refused


@dataclass(frozen=True)
class MapFrame:
    """Where a raster sits on the page's map: bounds as (south, west, north, east) in degrees, or in
    pixel map units (north = 0, south = -height) when ``georeferenced`` is False; its zoom range; the
    zoom of its full resolution and its overview factors (what a tile costs to read)."""

    georeferenced: bool
    bounds: tuple[float, float, float, float]
    min_zoom: int
    max_zoom: int
    native_zoom: int
    overviews: tuple[int, ...]


def map_frame(path: str, driver: str, *, tile_limit: int) -> MapFrame:
    """The frame of the raster at ``path`` (opened with ``driver``); its lowest zoom reads at most
    ``tile_limit`` pixels a tile."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.simplefilter("ignore", NoOverviewWarning)
        with open_known(path, driver) as ds:
            overviews = tuple(ds.overviews(1))
            size = dict(width=ds.width, height=ds.height, overviews=overviews)
            if ds.crs is None:
                whole = -math.ceil(math.log2(max(ds.height, ds.width, TILE) / TILE))  # one tile: all of it
                low = lowest_zoom(tile_limit, floor=whole, native_zoom=0, **size)
                return MapFrame(
                    False, (-ds.height, 0.0, 0.0, float(ds.width)), low, PIXEL_MAX_ZOOM, 0, overviews
                )
            with Reader(None, dataset=ds) as reader:
                west, south, east, north = reader.get_geographic_bounds(WGS84)
                native = reader.maxzoom
                low = lowest_zoom(tile_limit, floor=reader.minzoom, native_zoom=native, **size)
                return MapFrame(True, (south, west, north, east), low, native, native, overviews)


def check_tile_address(z: int, x: int, y: int, *, georeferenced: bool) -> None:
    """:class:`UserError` for a tile address that cannot exist (a negative Web Mercator zoom, x or y
    outside the zoom's grid, a zoom beyond :data:`MAX_ZOOM`)."""
    if georeferenced and not (0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z):
        raise UserError(f"no map tile {z}/{x}/{y}: zoom 0 to {MAX_ZOOM}, x and y from 0 to 2^zoom - 1")
    if not georeferenced and not (-MAX_ZOOM <= z <= MAX_ZOOM and max(abs(x), abs(y)) < 2**31):
        raise UserError(f"no image tile {z}/{x}/{y}: zoom -{MAX_ZOOM} to {MAX_ZOOM}")


def view_window(
    bounds: tuple[float, float, float, float],
    *,
    frame: MapFrame,
    crs: CRS | None,
    transform,
    size: tuple[int, int],
) -> Window:
    """The whole-pixel window of the raster (height, width = ``size``) seen in the map ``bounds``
    (south, west, north, east in the frame's units); :class:`UserError` when they do not overlap."""
    south, west, north, east = bounds
    if not (south < north and west < east) or not all(map(math.isfinite, bounds)):
        raise UserError("the view bounds must be finite with south < north and west < east")
    height, width = size
    if frame.georeferenced:
        left, bottom, right, top = transform_bounds(WGS84, crs, west, south, east, north, densify_pts=21)
        window = from_bounds(left, bottom, right, top, transform)
    else:
        window = Window(west, -north, east - west, north - south)
    col0, row0 = max(0, math.floor(window.col_off)), max(0, math.floor(window.row_off))
    col1 = min(width, math.ceil(window.col_off + window.width))
    row1 = min(height, math.ceil(window.row_off + window.height))
    if col1 <= col0 or row1 <= row0:
        raise UserError("the current view does not overlap the image; move the map onto it")
    return Window(col0, row0, col1 - col0, row1 - row0)


def read_tile(
    path: str,
    driver: str,
    x: int,
    y: int,
    z: int,
    bands: list[int],
    *,
    georeferenced: bool,
    resampling: str = "bilinear",
    offset: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray] | None:
    """Band values bands×256×256 (the file's dtype) and validity 256×256 of tile (x, y, z), or None when
    the tile misses the raster. ``offset`` (column, row) places a raster without CRS in the pixel frame."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.simplefilter("ignore", NoOverviewWarning)
        with open_known(path, driver) as ds:
            if georeferenced:
                with Reader(None, dataset=ds) as reader:
                    try:
                        image = reader.tile(
                            x, y, z, tilesize=TILE, indexes=bands, resampling_method=resampling,
                            reproject_method=resampling,
                        )  # fmt: skip
                    except TileOutsideBounds:
                        return None
                return image.array.data, ~np.ma.getmaskarray(image.array).all(axis=0)
            span = TILE * 2.0**-z  # image pixels per tile side
            window = Window(x * span - offset[0], y * span - offset[1], span, span)
            if not (-span < window.col_off < ds.width and -span < window.row_off < ds.height):
                return None
            data = ds.read(
                bands, window=window, out_shape=(len(bands), TILE, TILE), boundless=True, masked=True,
                resampling=Resampling[resampling],
            )  # fmt: skip
    return data.data, ~np.ma.getmaskarray(data).all(axis=0)


def png(rgb: np.ndarray, alpha: np.ndarray) -> bytes:
    """PNG bytes of an RGBA image from uint8 h×w×3 colours and a h×w validity or uint8 alpha."""
    alpha = alpha.astype(np.uint8) * 255 if alpha.dtype == bool else alpha
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def empty_png() -> bytes:
    return png(np.zeros((TILE, TILE, 3), np.uint8), np.zeros((TILE, TILE), np.uint8))


def colour_table(colours: list[tuple[int, int, int]], hidden: set[int]) -> np.ndarray:
    """256×4 uint8 RGBA lookup of class ids; hidden ids and ids without a colour (nodata) are transparent."""
    table = np.zeros((256, 4), dtype=np.uint8)
    for i, colour in enumerate(colours):
        if i not in hidden:
            table[i] = (*colour, 255)
    return table
