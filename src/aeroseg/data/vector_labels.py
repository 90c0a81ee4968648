"""Your own labels: polygons of a vector file rasterised on the pixel grid of each image, then tiled into the
canonical layout by the writer of the benchmarks (``aeroseg prepare labels``).

- Labels: any vector file GDAL/OGR reads (GeoPackage, GeoJSON, Shapefile, ...; through pyogrio) or a
  GeoParquet file (pyarrow, the ``geo`` extra), with a CRS. The value of ``field`` (text or number) names
  the class of a feature; features without a value are skipped.
- Classes: ``classes`` in their order (features of other values are skipped), else every value of the field,
  sorted; ``background`` adds a last class for the pixels no polygon covers (else they are ignored, 255).
  ``unseen`` classes stay in the masks and are listed in ``dataset.yaml``: training ignores them, evaluation
  scores them (the open-vocabulary split of the benchmarks).
- Rasterising (rasterio.features): on each image's own grid (CRS, transform, size), the polygons reprojected
  from the labels' CRS; a pixel takes the class of the polygon covering its centre (``all_touched``: of every
  polygon it touches), of the later feature in the file where polygons overlap; the image's nodata pixels
  are ignored.
- Pixels: the bands of ``bands`` (else the first three colour bands) mapped to [0, 1] by the rule of
  ``aeroseg predict`` (:mod:`aeroseg.raster`) and stored as 8-bit PNGs, so that training sees the pixels
  predict gives the model.
- Split: the images of ``val_images`` are val, the others train; without them the bottom ``val_fraction`` of
  every image's rows is val and the rest train, so that no pixel is in both and the two touch along one line.
- Tiles: ``tile``² windows every ``tile`` pixels, the last flush with the border, tiles without a labelled
  pixel dropped (:class:`aeroseg.data.writer.Writer`); a whole image is held in memory at a time.

Refused in one line: a labels file or an image without a CRS, a field that does not exist or holds no
value, a class of ``classes`` no feature has, an image no polygon overlaps, a split without any polygon.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.features import rasterize
from rasterio.warp import transform, transform_bounds
from rasterio.windows import Window
from rasterio.windows import bounds as window_bounds
from rasterio.windows import transform as window_transform

from aeroseg.data.info import DatasetInfo
from aeroseg.data.writer import Source, Tiling
from aeroseg.errors import UserError
from aeroseg.extras import require
from aeroseg.raster import RasterSource, ReadOptions, one_line

IGNORE = 255


@dataclass(frozen=True)
class LabelOptions:
    """What ``aeroseg prepare labels`` makes of the images and the labels."""

    field: str  # attribute holding each feature's class
    classes: tuple[str, ...] | None = None  # class names in id order; None: every value, sorted
    unseen: tuple[str, ...] = ()  # classes held out of training
    background: str | None = None  # class of the pixels no polygon covers; None: ignored
    all_touched: bool = False  # every pixel a polygon touches, not only those whose centre it covers
    layer: str | None = None  # layer of a multi-layer vector file
    bands: tuple[int, ...] | None = None  # 1-based bands for R,G,B (or grey); None: the reader's choice
    val_images: tuple[str, ...] = ()  # images that form the val split; empty: a strip of every image
    val_fraction: float = 0.2  # the bottom fraction of each image's rows that is val (no val_images)
    tile: int = 512  # tile side in pixels

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise UserError(f"--val-fraction must be in (0, 1), got {self.val_fraction:g}")
        if self.tile < 16:
            raise UserError(f"--tile must be at least 16 pixels, got {self.tile}")


@dataclass(frozen=True)
class Labels:
    """The features of a vector file: geometries, class values (None: no value), CRS."""

    path: Path
    geometries: np.ndarray  # shapely geometries
    values: list[str | None]
    crs: CRS


@dataclass(frozen=True)
class _Image:
    path: str
    name: str
    height: int
    width: int
    transform: rasterio.Affine
    shapes: list[tuple[object, int]]  # (geometry in the image's CRS, class id), in file order


def read_labels(path: str | Path, field: str, layer: str | None = None) -> Labels:
    """The features of ``path`` with the values of ``field``; :class:`UserError` for a missing field or CRS."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--labels {path} does not exist")
    if path.suffix.lower() == ".parquet":
        geometries, values, crs = _read_geoparquet(path, field)
    else:
        geometries, values, crs = _read_ogr(path, field, layer)
    if crs is None:
        raise UserError(
            f"--labels {path} has no CRS (unknown CRS), so it cannot be placed on the images; set one"
        )
    if all(v is None for v in values):
        raise UserError(f"the field {field!r} of {path} is empty: no feature has a class value")
    return Labels(path, shapely.from_wkb(geometries), values, crs)


def _read_ogr(path: Path, field: str, layer: str | None) -> tuple[np.ndarray, list[str | None], CRS | None]:
    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
        if layer is None and len(layers) > 1:
            raise UserError(f"{path} has the layers {', '.join(layers)}: choose one with --layer")
        info = pyogrio.read_info(path, layer=layer)
        if field not in info["fields"]:
            fields = ", ".join(info["fields"]) or "none"
            raise UserError(f"{path} has no field {field!r} (its fields: {fields}); choose one with --field")
        _, _, geometries, (column,) = pyogrio.raw.read(path, layer=layer, columns=[field])
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as error:
        raise UserError(f"cannot read --labels {path}: {one_line(error)}") from None
    return geometries, [_value(v) for v in column], CRS.from_user_input(info["crs"]) if info["crs"] else None


def _read_geoparquet(path: Path, field: str) -> tuple[np.ndarray, list[str | None], CRS | None]:
    parquet = require("pyarrow.parquet", "GeoParquet labels")
    try:
        table = parquet.read_table(path)
    except OSError as error:
        raise UserError(f"cannot read --labels {path}: {one_line(error)}") from None
    geo = json.loads((table.schema.metadata or {}).get(b"geo", b"null"))
    if not isinstance(geo, dict) or geo.get("primary_column") not in table.column_names:
        raise UserError(f"{path} is not a GeoParquet file (no 'geo' metadata naming its geometry column)")
    column = geo["columns"][geo["primary_column"]]
    if column.get("encoding", "WKB").upper() != "WKB":
        raise UserError(f"{path}: geometries encoded as {column['encoding']}; write them as WKB")
    if field not in table.column_names:
        fields = ", ".join(n for n in table.column_names if n != geo["primary_column"])
        raise UserError(f"{path} has no field {field!r} (its fields: {fields}); choose one with --field")
    crs = column.get("crs", "OGC:CRS84")  # GeoParquet: an absent crs is longitude/latitude WGS84
    crs = None if crs is None else CRS.from_user_input(crs if isinstance(crs, str) else json.dumps(crs))
    geometries = np.array(table.column(geo["primary_column"]).to_pylist(), dtype=object)
    return geometries, [_value(v) for v in table.column(field).to_pylist()], crs


def _value(value: object) -> str | None:
    """A field value as a class name: text stripped, whole numbers without ".0"; None for no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def class_names(labels: Labels, options: LabelOptions) -> list[str]:
    """The classes in id order (``background`` last); :class:`UserError` for a class no feature has."""
    found = sorted({v for v in labels.values if v is not None})
    classes = list(options.classes) if options.classes else found
    missing = [c for c in classes if c not in found]
    if missing:
        shown = ", ".join(found[:20]) + (" ..." if len(found) > 20 else "")
        raise UserError(
            f"--classes names {', '.join(missing)}, which no feature of {labels.path} has in the field "
            f"{options.field!r} (its values: {shown})"
        )
    if options.background is not None:
        if options.background in classes:
            raise UserError(
                f"--background {options.background!r} is also a class of the labels; name it otherwise"
            )
        classes.append(options.background)
    return classes


def plan_sources(
    images: Sequence[str], labels: Labels, info: DatasetInfo, options: LabelOptions
) -> tuple[list[Source], int]:
    """The :class:`Source` of every image part (train / val) and the number of features skipped for a value
    outside the classes; :class:`UserError` for an image no polygon overlaps or a split without polygons."""
    ids = {name: i for i, name in enumerate(info.classes)}
    keep = np.array([v is not None and v in ids and v != options.background for v in labels.values])
    geometries = labels.geometries[keep]
    classes = [ids[v] for v, k in zip(labels.values, keep, strict=True) if k]
    names = [Path(p).stem for p in images]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise UserError(f"two images are named {clash!r}; their tiles would share names: rename one")
    unknown = [p for p in options.val_images if p not in images]
    if unknown:
        raise UserError(f"--val-image {unknown[0]} is not one of the --image files")
    sources, labelled = [], set()
    for path in images:
        image = _place(path, geometries, classes, labels)
        if options.val_images:
            split = "val" if path in options.val_images else "train"
            parts = [(split, (0, image.height))]
        else:
            cut = image.height - max(1, round(image.height * options.val_fraction))
            parts = [("train", (0, cut)), ("val", (cut, image.height))]
        for split, rows in parts:
            box = shapely.box(
                *window_bounds(Window(0, rows[0], image.width, rows[1] - rows[0]), image.transform)
            )
            if any(shapely.intersects(g, box) for g, _ in image.shapes):
                labelled.add(split)
            sources.append(Source(split, image.name, partial(_load, image, rows, info, options)))
    for split in ("train", "val"):
        if options.background is None and split not in labelled:
            where = (
                "the --val-image files"
                if options.val_images
                else f"the bottom {options.val_fraction:g} of the rows"
            )
            raise UserError(
                f"no polygon lies in the {split} split ({where if split == 'val' else 'the other rows or images'}); "
                "move the split (--val-fraction or --val-image) or add labels there"
            )
    return sources, int((~keep).sum())


def _place(path: str, geometries: np.ndarray, classes: list[int], labels: Labels) -> _Image:
    """The image at ``path`` with the polygons that overlap it, in its CRS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                crs, affine, height, width, bounds = ds.crs, ds.transform, ds.height, ds.width, ds.bounds
    except (RasterioError, OSError) as error:
        raise UserError(f"cannot read --image {path}: {one_line(error)}") from None
    if crs is None:
        raise UserError(f"--image {path} has no CRS (unknown CRS), so the labels cannot be placed on it")
    near = shapely.intersects(
        geometries, shapely.box(*transform_bounds(crs, labels.crs, *bounds, densify_pts=21))
    )
    placed = _reproject(geometries[near], labels.crs, crs)
    inside = shapely.intersects(placed, shapely.box(*bounds))
    if not inside.any():
        west, south, east, north = transform_bounds(labels.crs, crs, *shapely.total_bounds(geometries))
        raise UserError(
            f"no polygon of {labels.path} overlaps --image {path}: the labels span {west:.6g}, {south:.6g}, "
            f"{east:.6g}, {north:.6g} and the image {bounds.left:.6g}, {bounds.bottom:.6g}, {bounds.right:.6g}, "
            f"{bounds.top:.6g} in {crs.to_string()}"
        )
    chosen = np.flatnonzero(near)[inside]
    shapes = [(g, classes[i]) for g, i in zip(placed[inside], chosen, strict=True)]
    return _Image(path, Path(path).stem, height, width, affine, shapes)


def _reproject(geometries: np.ndarray, source: CRS, target: CRS) -> np.ndarray:
    if source == target or not len(geometries):
        return geometries

    def move(xy: np.ndarray) -> np.ndarray:
        xs, ys = transform(source, target, xy[:, 0], xy[:, 1])
        return np.column_stack([xs, ys])

    return shapely.transform(geometries, move)


def _load(
    image: _Image, rows: tuple[int, int], info: DatasetInfo, options: LabelOptions
) -> tuple[np.ndarray, np.ndarray]:
    """The rows [r0, r1) of an image as (h×w×3 uint8 pixels, h×w uint8 class ids)."""
    window = Window(0, rows[0], image.width, rows[1] - rows[0])
    fill = len(info.classes) - 1 if options.background is not None else IGNORE
    with RasterSource(image.path, ReadOptions(bands=options.bands)) as source:
        pixels, valid = source.read(window)
    mask = rasterize(
        image.shapes, out_shape=(rows[1] - rows[0], image.width), transform=window_transform(window, image.transform),
        fill=fill, all_touched=options.all_touched, dtype="uint8",
    )  # fmt: skip
    mask[~valid] = IGNORE
    rgb = (pixels * 255).round().astype(np.uint8).transpose(1, 2, 0)
    return np.ascontiguousarray(rgb), mask


def tiling(options: LabelOptions) -> Tiling:
    return Tiling(size=options.tile, stride=options.tile)
