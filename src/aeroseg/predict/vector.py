"""Polygons of the predicted classes, written to a GeoPackage or GeoJSON file (``--vector``).

Each polygon is one connected region of one class (4-connectivity, GDAL's polygonize, which reads the class
raster line by line), with the attributes ``class`` (name), ``class_id``, ``area`` and ``source`` (the input
image). Nodata and background pixels give no polygon. ``area`` is the polygon's exact pixel area in the
units of the raster's CRS squared (pixels² for an image without georeferencing), measured before
simplification; ``min_area`` drops smaller polygons and ``simplify`` is the Douglas–Peucker tolerance in CRS
units (each polygon is simplified on its own; neighbours may then overlap or leave slivers). All images go
into one layer, ``predictions``, in the CRS of the first image; the polygons of images in another CRS are
reprojected.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.warp import transform_geom

from aeroseg.errors import UserError
from aeroseg.predict.classes import BACKGROUND, NODATA
from aeroseg.predict.outputs import CLASSES_TAG, temporary_path

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}
FIELDS = ["class", "class_id", "area", "source"]
LAYER = "predictions"
_BATCH = 10_000


def vector_driver(path: str | Path) -> str:
    """The OGR driver of a vector output path; :class:`UserError` for an unknown extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in DRIVERS:
        raise UserError(f"--vector {path}: the file must end in .gpkg or .geojson")
    return DRIVERS[suffix]


class VectorWriter:
    """Collects the polygons of class rasters into one vector file, renamed into place by :meth:`finish`."""

    def __init__(self, path: str | Path, *, min_area: float = 0.0, simplify: float = 0.0) -> None:
        self.path = Path(path)
        self.driver = vector_driver(path)
        self.min_area, self.simplify = min_area, simplify
        self.crs: CRS | None = None
        self.count = 0
        self._started = False  # whether the first class raster has set the CRS
        self._written = False  # whether the file exists (GeoJSON cannot append to an empty layer)
        self._tmp = temporary_path(self.path)
        self._tmp.unlink(missing_ok=True)

    def add(self, class_raster: str | Path, source: str) -> int:
        """Add the polygons of a class raster written by ``aeroseg predict``; returns their number."""
        with rasterio.open(class_raster) as ds:
            names = json.loads(ds.tags().get(CLASSES_TAG, "null"))
            if not isinstance(names, list):
                raise UserError(
                    f"{class_raster} has no {CLASSES_TAG} tag; it was not written by aeroseg predict"
                )
            crs = ds.crs
            if not self._started:
                self.crs, self._started = crs, True
            elif (crs is None) != (self.crs is None):
                raise UserError(
                    f"{source}: cannot put polygons of georeferenced and plain images in one vector file"
                )
            reproject = crs is not None and crs != self.crs
            added, batch = 0, []
            for geometry, value in shapes(rasterio.band(ds, 1), transform=ds.transform):
                class_id = int(value)
                if class_id == NODATA or class_id >= len(names) or names[class_id] == BACKGROUND:
                    continue
                polygon = shapely.geometry.shape(geometry)
                area = float(polygon.area)
                if area < self.min_area:
                    continue
                if self.simplify > 0:
                    polygon = shapely.simplify(polygon, self.simplify, preserve_topology=True)
                if reproject:
                    polygon = shapely.geometry.shape(
                        transform_geom(crs, self.crs, shapely.geometry.mapping(polygon))
                    )
                batch.append((polygon, names[class_id], class_id, area))
                if len(batch) == _BATCH:
                    added += self._flush(batch, source)
                    batch = []
            added += self._flush(batch, source)
        self.count += added
        return added

    def _flush(self, batch: list, source: str) -> int:
        if not batch:
            return 0
        polygons, names, ids, areas = zip(*batch, strict=True)
        fields = [
            np.array(names, dtype=object),
            np.array(ids, dtype=np.int32),
            np.array(areas, dtype=np.float64),
            np.array([source] * len(batch), dtype=object),
        ]
        self._write(np.array(shapely.to_wkb(list(polygons)), dtype=object), fields)
        return len(batch)

    def _write(self, geometry: np.ndarray, fields: list[np.ndarray]) -> None:
        pyogrio.raw.write(
            self._tmp,
            geometry,
            fields,
            FIELDS,
            layer=LAYER,
            driver=self.driver,
            geometry_type="Polygon",
            crs=self.crs.to_wkt() if self.crs else None,
            append=self._written,
        )
        self._written = True

    def finish(self) -> None:
        """Write the file (an empty layer when there was no polygon) and rename it to its final name."""
        if not self._written:
            empty = [np.array([], dtype=t) for t in (object, np.int32, np.float64, object)]
            self._write(np.array([], dtype=object), empty)
        self._tmp.replace(self.path)

    def abort(self) -> None:
        self._tmp.unlink(missing_ok=True)
