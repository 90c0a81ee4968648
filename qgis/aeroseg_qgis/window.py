"""The pixels of a raster layer that an extent covers, as a whole-pixel window of the layer's own grid.

A segmented extent is cut from the layer on its pixel grid (GDAL's ``srcWin``), so the class raster lies
exactly on the input's pixels: the window is the smallest run of whole pixels covering the extent, clipped
to the layer.
"""

from __future__ import annotations

import math

Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in the layer's CRS
Window = tuple[int, int, int, int]  # column, row, width, height
_SNAP = 1e-6  # pixels: an extent edge this close to a pixel edge is on it (floating-point noise)


def pixel_window(layer_extent: Box, width: int, height: int, extent: Box) -> Window | None:
    """The window of the layer (``layer_extent`` over ``width`` × ``height`` pixels, north up) that
    ``extent`` covers; None when they do not overlap."""
    left, bottom, right, top = layer_extent
    size_x, size_y = (right - left) / width, (top - bottom) / height
    xmin, ymin, xmax, ymax = extent
    col0 = max(0, math.floor((xmin - left) / size_x + _SNAP))
    col1 = min(width, math.ceil((xmax - left) / size_x - _SNAP))
    row0 = max(0, math.floor((top - ymax) / size_y + _SNAP))
    row1 = min(height, math.ceil((top - ymin) / size_y - _SNAP))
    if col1 <= col0 or row1 <= row0:
        return None
    return col0, row0, col1 - col0, row1 - row0
