"""Polygons of the predicted classes, written to a GeoPackage, GeoJSON or GeoParquet file (``--vector``).

Each polygon is one connected region of one class (4-connectivity, GDAL's polygonize, which reads the class
raster line by line), with the attributes ``class`` (name), ``class_id``, ``area`` and ``source`` (the input
image). Nodata pixels give no polygon, nor does the background id 0 that ``--background-threshold`` adds
(a class the user named "background" does). ``area`` is the polygon's exact area in the
units of the raster's CRS squared, measured before
simplification; ``min_area`` drops smaller polygons and ``simplify`` is the Douglas–Peucker tolerance in CRS
units (each polygon is simplified on its own; neighbours may then overlap or leave slivers). All images go
into one layer, ``predictions``, in the CRS of the first image; the polygons of images in another CRS are
reprojected. An image placed only by ground control points (GCPs, no geotransform) gets its polygons in the
GCPs' CRS, through the affine (first-order) least-squares fit of its GCPs (``rasterio.transform.from_gcps``,
GDAL's ``GDALGCPsToGeoTransform``): exact for GCPs of an affine placement; an image whose GCPs need a
higher-order warp should be warped first (``gdalwarp``).

GeoParquet (``.parquet``, GeoParquet 1.1: WKB geometry column ``geometry``, the CRS as PROJJSON in the ``geo``
metadata) is written with pyarrow (the ``geo`` extra), one row group per batch of polygons, so memory does not
grow with their number; DuckDB, Sedona, BigQuery and geopandas read it.

An image without a CRS has only pixel coordinates, which every GIS would read as degrees: such images are
refused unless ``pixel_coordinates`` is asked for; the file then holds (column, row) coordinates with the
row axis pointing down, no CRS, and says so in its layer description (GeoParquet: ``"crs": null`` and the
description in the file's ``aeroseg`` metadata; ``area`` is in pixels²).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely
import shapely.affinity
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes
from rasterio.transform import from_gcps
from rasterio.warp import transform_geom

from aeroseg.atomic import temporary_path
from aeroseg.errors import UserError
from aeroseg.extras import require
from aeroseg.prediction.classes import NODATA
from aeroseg.prediction.outputs import CLASSES_TAG

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".parquet": "Parquet"}
FIELDS = ["class", "class_id", "area", "source"]
PIXEL_DESCRIPTION = (
    "pixel coordinates: x = column, y = row of the source image (y points down), no CRS; area in pixels²"
)
LAYER = "predictions"
_BATCH = 10_000


def vector_driver(path: str | Path) -> str:
    """The OGR driver of a vector output path; :class:`UserError` for an unknown extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in DRIVERS:
        raise UserError(f"--vector {path}: the file must end in .gpkg or .geojson (or .parquet: GeoParquet)")
    return DRIVERS[suffix]


class VectorWriter:
    """Collects the polygons of class rasters into one vector file, renamed into place by :meth:`finish`."""

    def __init__(
        self,
        path: str | Path,
        *,
        min_area: float = 0.0,
        simplify: float = 0.0,
        pixel_coordinates: bool = False,
    ) -> None:
        self.path = Path(path)
        self.driver = vector_driver(path)
        if min_area < 0 or simplify < 0:
            raise UserError(f"--min-area and --simplify must be >= 0, got {min_area:g} and {simplify:g}")
        self.min_area, self.simplify = min_area, simplify
        self.pixel_coordinates = pixel_coordinates
        self.crs: CRS | None = None
        self.count = 0
        self._parquet: GeoParquetWriter | None = None
        if self.driver == "Parquet":
            require("pyarrow", "GeoParquet output (--vector FILE.parquet)")
        self._started = False  # whether the first class raster has set the CRS
        self._written = False  # whether the file exists (GeoJSON cannot append to an empty layer)
        self._tmp = temporary_path(self.path)
        self._tmp.unlink(missing_ok=True)

    def add(self, class_raster: str | Path, source: str) -> int:
        """Add the polygons of a class raster written by ``aeroseg predict``; returns their number."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(class_raster)
        with ds:
            names = json.loads(ds.tags().get(CLASSES_TAG, "null"))
            if not isinstance(names, list):
                raise UserError(
                    f"{class_raster} has no {CLASSES_TAG} tag; it was not written by aeroseg predict"
                )
            crs, place = ds.crs, None
            gcps, gcp_crs = ds.gcps
            if crs is None and ds.transform.is_identity and gcps and gcp_crs is not None:
                crs, fit = gcp_crs, from_gcps(gcps)  # the affine fit of the GCPs
                place = [fit.a, fit.b, fit.d, fit.e, fit.xoff, fit.yoff]  # shapely's order
            if crs is None and not self.pixel_coordinates:
                raise UserError(
                    f"{source} has no CRS, so its polygons could only be in pixel coordinates, which GIS "
                    "software reads as degrees; pass --vector-pixels (pixel_coordinates=True) to write them"
                )
            background = ds.tags().get("AEROSEG_BACKGROUND_THRESHOLD") is not None  # id 0 is background
            self._check_crs(crs, source)
            reproject = crs is not None and crs != self.crs
            added, batch = 0, []
            for geometry, value in shapes(rasterio.band(ds, 1)):
                class_id = int(value)
                if class_id == NODATA or class_id >= len(names) or (background and class_id == 0):
                    continue
                polygon = shapely.geometry.shape(geometry)  # the band's own transform (GDAL's polygonize)
                if place is not None:
                    polygon = shapely.affinity.affine_transform(polygon, place)
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

    def add_file(self, polygons: str | Path, class_raster: str | Path, source: str) -> int:
        """Add the polygons of ``class_raster`` that another writer wrote into ``polygons`` (a worker of a
        distributed run, with the same ``min_area`` and ``simplify``), reprojected to this file's CRS;
        returns their number."""
        _, _, geometry, fields = pyogrio.raw.read(polygons, layer=LAYER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(class_raster) as ds:  # its header: the CRS as one process takes it
                crs = ds.crs
        self._check_crs(crs, source)
        if crs is not None and crs != self.crs and len(geometry):
            shapes_ = [shapely.geometry.mapping(g) for g in shapely.from_wkb(geometry)]
            geometry = shapely.to_wkb(
                [shapely.geometry.shape(transform_geom(crs, self.crs, g)) for g in shapes_]
            )
        added = 0
        for start in range(0, len(geometry), _BATCH):
            batch = slice(start, start + _BATCH)
            self._write(np.array(geometry[batch], dtype=object), [f[batch] for f in fields])
            added += len(geometry[batch])
        self.count += added
        return added

    def _check_crs(self, crs: CRS | None, source: str) -> None:
        """Take the CRS of the first image; refuse plain and georeferenced images in one file."""
        if not self._started:
            self.crs, self._started = crs, True
        elif (crs is None) != (self.crs is None):
            raise UserError(
                f"{source}: cannot put polygons of georeferenced and plain images in one vector file"
            )

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
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "'crs' was not provided")  # pixel coordinates, described
            self._write_batch(geometry, fields)

    def _write_batch(self, geometry: np.ndarray, fields: list[np.ndarray]) -> None:
        if self.driver == "Parquet":
            if self._parquet is None:
                self._parquet = GeoParquetWriter(self._tmp, self.crs)
            self._parquet.write(geometry, fields)
            self._written = True
            return
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
            **({} if self._written or self.crs else {"layer_options": {"DESCRIPTION": PIXEL_DESCRIPTION}}),
        )
        self._written = True

    def finish(self) -> None:
        """Write the file (an empty layer when there was no polygon) and rename it to its final name."""
        if not self._written:
            empty = [np.array([], dtype=t) for t in (object, np.int32, np.float64, object)]
            self._write(np.array([], dtype=object), empty)
        if self._parquet is not None:
            self._parquet.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        self._tmp.unlink(missing_ok=True)


class GeoParquetWriter:
    """Rows of :data:`FIELDS` and a WKB ``geometry`` column, written as GeoParquet 1.1 row group by row
    group (the ``geo`` metadata after geoparquet.org's spec, ``columns.geometry``: WKB, Polygon, PROJJSON CRS)."""

    def __init__(self, path: Path, crs: CRS | None) -> None:
        pa = require("pyarrow", "GeoParquet output (--vector FILE.parquet)")
        parquet = require("pyarrow.parquet", "GeoParquet output (--vector FILE.parquet)")
        column = {
            "encoding": "WKB",
            "geometry_types": ["Polygon"],
            "crs": crs.to_dict(projjson=True) if crs is not None else None,  # null: no CRS (absent: CRS84)
        }
        metadata = {
            "geo": json.dumps(
                {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
            )
        }
        if crs is None:
            metadata["aeroseg"] = json.dumps({"description": PIXEL_DESCRIPTION})
        types = [pa.string(), pa.int32(), pa.float64(), pa.string(), pa.binary()]
        self._schema = pa.schema(list(zip([*FIELDS, "geometry"], types, strict=True)), metadata=metadata)
        self._pa = pa
        self._writer = parquet.ParquetWriter(path, self._schema, compression="zstd")
        self._open = True

    def write(self, geometry: np.ndarray, fields: list[np.ndarray]) -> None:
        columns = [
            self._pa.array(v, type=f.type) for v, f in zip([*fields, geometry], self._schema, strict=True)
        ]
        self._writer.write_table(self._pa.Table.from_arrays(columns, schema=self._schema))

    def close(self) -> None:
        if self._open:
            self._writer.close()
            self._open = False
