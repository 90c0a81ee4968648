"""Reading the images of ``aeroseg predict`` window by window, whatever their size, bands and bit depth.

Every input goes through rasterio (PNG, JPEG, TIFF, GeoTIFF, and http(s) URLs, which GDAL reads by range
requests), so a window of a 20,000² scene is read without the rest. Pixel values are mapped to [0, 1] per
band, by one rule for files and arrays, the CLI and the Python API (unless ``scale`` or ``percentiles``
is given, which always win):

- uint8: /255;
- floats whose values all lie in [0, 1]: taken as they are; floats in [0, 255] (a float copy of an 8-bit
  image): /255;
- every other type and range (uint16, int, floats beyond 255 or below 0): the 2nd–98th percentiles of
  each band.

The float ranges and the percentiles come from a decimated read of at most :data:`OVERVIEW_SIDE` pixels a
side (GDAL uses the file's overviews where it has them). A pixel is nodata (id 255 in the class raster, NaN
in the scores) when all its bands equal the nodata value, or when any of its bands holds NaN or ±inf (with or
without a nodata tag). Arrays are H×W, H×W×C or C×H×W (the channel axis
is the shorter of the first and last; equal lengths are refused as ambiguous); bool arrays are refused.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
from rasterio.windows import Window

from aeroseg.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MANIFEST_SUFFIX = ".txt"  # a list of inputs, one a line
OVERVIEW_SIDE = 1024
DEFAULT_PERCENTILES = (2.0, 98.0)


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def _manifest(path: str) -> list[str]:
    """The images a manifest lists (see :func:`expand_inputs`)."""
    folder = os.path.dirname(path)
    found = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            image = entry if is_url(entry) or os.path.isabs(entry) else os.path.join(folder, entry)
            if not is_url(image) and not os.path.isfile(image):
                raise UserError(f"{path}, line {number}: {entry} is not a file")
            found.append(image)
    return found


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Image paths and URLs from files, folders (their images, sorted), glob patterns and manifests (a
    ``.txt`` file of one image path or URL a line; relative paths from the manifest's folder, blank lines
    and ``#`` comments skipped), in order.

    Raises :class:`UserError` for a path that does not exist, a pattern that matches nothing and a folder
    without images.
    """
    found: list[str] = []
    for item in inputs:
        if is_url(item):
            found.append(item)
        elif item.lower().endswith(MANIFEST_SUFFIX) and os.path.isfile(item):
            found.extend(_manifest(item))
        elif os.path.isdir(item):
            images = sorted(
                str(p)
                for p in Path(item).iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and p.name[0] != "."
            )
            if not images:
                raise UserError(f"folder {item} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(images)
        elif os.path.exists(item):
            found.append(item)
        elif glob.has_magic(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                raise UserError(f"no file matches {item}")
            found.extend(matches)
        else:
            raise UserError(f"input {item} does not exist")
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class ReadOptions:
    """How bands are chosen and scaled to [0, 1]."""

    bands: tuple[int, ...] | None = None  # 1-based bands for R, G, B (one band = grey); None: automatic
    scale: tuple[float, float] | None = None  # fixed value range for every band
    percentiles: tuple[float, float] | None = None  # per-band percentiles; None: /255 for uint8, else 2-98
    nodata: float | None = None  # overrides the file's nodata value

    def __post_init__(self) -> None:
        if self.bands is not None and (len(self.bands) not in (1, 3) or min(self.bands) < 1):
            raise UserError(f"--bands takes one or three 1-based band numbers, got {_join(self.bands)}")
        if self.scale is not None and not self.scale[0] < self.scale[1]:
            raise UserError(f"--scale MIN,MAX needs MIN < MAX, got {self.scale[0]:g},{self.scale[1]:g}")
        if self.percentiles is not None and not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise UserError("--percentiles LOW,HIGH needs 0 <= LOW < HIGH <= 100")


class RasterSource:
    """An image opened for reading by window: ``read(window) -> (image 3×h×w float32 in [0, 1], valid h×w)``.

    Use as a context manager. :meth:`georeferencing` places the outputs (CRS and transform, or GCPs);
    ``map_crs`` is the CRS of the image's map coordinates (the GCPs' for a GCP-only image), None without one.
    ``no_contrast``: a one-line warning when the percentile mapping of a band is flat (a constant 16-bit
    image: every pixel would get one class), else None.
    ``drivers`` (GDAL short names) are the only formats opened, tried in order; None (``aeroseg predict``) lets
    GDAL choose any format, VRTs and URLs included, and ``aeroseg serve`` passes its allow-list.
    """

    def __init__(
        self, path: str, options: ReadOptions = ReadOptions(), *, drivers: Sequence[str] | None = None
    ) -> None:
        self.path = path
        own = getattr(path, "bands", None)  # an input that chooses its bands (aeroseg.stac.StacInput)
        if options.bands is None and own:
            options = replace(options, bands=tuple(own))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dataset = open_dataset(path, drivers)
        except (RasterioError, OSError) as error:
            raise UserError(f"cannot read {path}: {one_line(error)}") from None
        try:
            self._setup(options)
        except BaseException:
            self._dataset.close()
            raise

    def _setup(self, options: ReadOptions) -> None:
        ds = self._dataset
        self.height, self.width = ds.height, ds.width
        self.crs, self.transform = ds.crs, ds.transform
        gcps, gcp_crs = ds.gcps
        self.gcps = list(gcps) if ds.crs is None and ds.transform.is_identity else []  # GCP-only images
        self.map_crs = ds.crs if ds.crs is not None else gcp_crs if self.gcps else None
        self.georeferenced = ds.crs is not None or not ds.transform.is_identity or bool(self.gcps)
        self.driver = ds.driver
        self._palette = None
        if options.bands is not None:
            bands = options.bands
            if max(bands) > ds.count:
                raise UserError(
                    f"{self.path} has {ds.count} band(s); --bands {_join(bands)} asks for band {max(bands)}"
                )
        else:
            colour = [i + 1 for i, c in enumerate(ds.colorinterp) if c != ColorInterp.alpha]
            if ds.colorinterp[0] == ColorInterp.palette:
                self._palette = _palette_table(ds.colormap(1))
                colour = [1]
            if len(colour) == 2:
                raise UserError(
                    f"{self.path} has 2 colour bands, too few for RGB; choose three with --bands, e.g. 1,2,1"
                )
            bands = tuple(colour[:3])
        self.bands = bands
        self._nodata = options.nodata if options.nodata is not None else ds.nodata
        self.no_contrast: str | None = None  # the warning for an image whose value mapping is flat
        self._ranges = self._value_ranges(options)

    def georeferencing(self) -> dict:
        """How the outputs are placed on the map, as keywords of ``rasterio.open(..., "w")``: the CRS and
        transform, or for an image placed only by ground control points those GCPs and their CRS."""
        if self.gcps:
            return {"gcps": self.gcps, "crs": self.map_crs}
        return {"crs": self.crs, "transform": self.transform}

    def _value_ranges(self, options: ReadOptions) -> np.ndarray:
        """Per-band (low, high) of the mapping to [0, 1]: bands×2."""
        if options.scale is not None:
            return np.array([options.scale] * len(self.bands), dtype=np.float64)
        if self._palette is not None or (options.percentiles is None and self._dataset.dtypes[0] == "uint8"):
            return np.array([UINT8_RANGE] * len(self.bands))
        low, high = options.percentiles or DEFAULT_PERCENTILES
        factor = max(1, max(self.height, self.width) / OVERVIEW_SIDE)
        shape = (max(1, round(self.height / factor)), max(1, round(self.width / factor)))
        samples = {}
        for band in dict.fromkeys(self.bands):
            values = self._dataset.read(band, out_shape=shape, masked=True, resampling=Resampling.nearest)
            values = self._mask_nodata(values)
            samples[band] = values.compressed().astype(np.float64)
            samples[band] = samples[band][np.isfinite(samples[band])]
        if options.percentiles is None and self._dataset.dtypes[0].startswith("float"):
            found = [(v.min(), v.max()) for v in samples.values() if v.size]
            lowest, highest = min((a for a, _ in found), default=0.0), max((b for _, b in found), default=1.0)
            if lowest >= 0 and highest <= 255:  # [0, 1] as it is, [0, 255] by /255 (the module's rule)
                return np.array([(0.0, 1.0 if highest <= 1 else 255.0)] * len(self.bands))
        ranges = [tuple(np.percentile(v, (low, high))) if v.size else (0.0, 1.0) for v in samples.values()]
        by_band = dict(zip(dict.fromkeys(self.bands), ranges, strict=True))
        flat = {band: a for band, (a, b) in by_band.items() if b <= a}
        if flat:
            values = ", ".join(f"band {band}: {value:g}" for band, value in flat.items())
            self.no_contrast = (
                f"{self.path} has no contrast: one value over the {low:g}th–{high:g}th percentiles ({values}), "
                "so every pixel gets the same class; pass --scale MIN,MAX (or --percentiles) to map its values"
            )
        return np.array([by_band[b] for b in self.bands], dtype=np.float64)

    def _mask_nodata(self, values: np.ma.MaskedArray) -> np.ma.MaskedArray:
        if self._nodata is not None and not np.isnan(self._nodata):
            return np.ma.masked_where(values.filled(self._nodata) == self._nodata, values)
        return values

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The pixels of ``window`` as float32 3×h×w in [0, 1] and their validity (bool h×w)."""
        bands = list(dict.fromkeys(self.bands))
        data = self._dataset.read(bands, window=window, masked=True)  # (b, h, w)
        data = self._mask_nodata(data)
        index = [bands.index(b) for b in self.bands]
        invalid = np.ma.getmaskarray(data)[index].all(axis=0)
        values = data.data[index]
        if values.dtype.kind == "f":  # NaN and ±inf in any band: nodata, with or without a nodata tag
            invalid |= ~np.isfinite(values).all(axis=0)
        if self._palette is not None:
            values = self._palette[values[0]].transpose(2, 0, 1)  # (3, h, w)
        image = self._scale(values)
        if image.shape[0] == 1:
            image = np.repeat(image, 3, axis=0)
        return image, ~invalid

    def _scale(self, values: np.ndarray) -> np.ndarray:
        return to_unit(values, self._ranges)

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        """Values of :attr:`bands` as stored in the file (bands×h×w) → float32 3×h×w in [0, 1], with the
        same palette, scaling and grey handling as :meth:`read` (``aeroseg serve`` renders its tiles so)."""
        if self._palette is not None:
            values = self._palette[values[0]].transpose(2, 0, 1)  # (3, h, w)
        image = self._scale(values)
        return np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image

    def read_overview(self, max_side: int) -> np.ndarray:
        """The whole image decimated to at most ``max_side`` pixels a side, uint8 h×w×3 (for overlays)."""
        factor = max(1, max(self.height, self.width) / max_side)
        shape = (max(1, round(self.height / factor)), max(1, round(self.width / factor)))
        bands = list(dict.fromkeys(self.bands))
        data = self._dataset.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.nearest)
        values = data[[bands.index(b) for b in self.bands]]
        if self._palette is not None:
            values = self._palette[values[0]].transpose(2, 0, 1)
        image = self._scale(values)
        image = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
        return (image * 255).round().astype(np.uint8).transpose(1, 2, 0)

    def close(self) -> None:
        self._dataset.close()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dataset(path: str, drivers: Sequence[str] | None = None) -> rasterio.DatasetReader:
    """``path`` opened by rasterio with one of ``drivers`` (any driver when None); :class:`UserError` when
    none of them recognises the file, without letting another driver (VRT, HTTP, ...) look at it."""
    if drivers is None:
        return rasterio.open(path)
    for driver in drivers:  # rasterio.open takes one driver: GDAL then opens with that driver only
        try:
            return rasterio.open(path, driver=driver)
        except RasterioIOError as error:
            if "not recognized as" not in str(error):  # the format is right but the file is broken
                raise
    raise UserError(f"cannot read {path}: not a {' / '.join(drivers)} file (the only formats opened)")


class ArraySource(RasterSource):
    """A numpy image (H×W, H×W×C or C×H×W, any numeric dtype) read like a raster, with the same band and
    scaling rules (see the module docstring)."""

    def __init__(self, array: np.ndarray, options: ReadOptions = ReadOptions()) -> None:
        array = channels_last(array)
        if array.dtype == np.float64 or array.dtype == np.float16:
            array = array.astype(np.float32)
        self.path = "<array>"
        height, width, count = array.shape
        profile = dict(driver="GTiff", height=height, width=width, count=count, dtype=array.dtype)
        self._memfile = rasterio.MemoryFile()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dataset = self._memfile.open(**profile)
            self._dataset.write(np.moveaxis(array, -1, 0))
        try:
            self._setup(options)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._dataset.close()
        self._memfile.close()


UINT8_RANGE = (0.0, 255.0)  # the range of an 8-bit band: /255


def to_unit(values: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Band values (b×h×w) mapped to float32 [0, 1] by per-band (low, high) ``ranges`` (b×2); NaN becomes 0.
    Every image that reaches a model goes through this one function (predict, serve, the datasets)."""
    low = ranges[:, 0, None, None].astype(np.float32)
    high = ranges[:, 1, None, None].astype(np.float32)
    image = values.astype(np.float32)
    image -= low
    image *= 1 / np.maximum(high - low, 1e-12)
    np.clip(image, 0, 1, out=image)
    return np.nan_to_num(image, copy=False, nan=0.0)


def channels_last(array: np.ndarray) -> np.ndarray:
    """An image array as H×W×C: H×W gets one channel; of H×W×C and C×H×W the channel axis is the shorter of
    the first and the last. Raises :class:`UserError` for other shapes, equal first and last lengths
    (ambiguous), bool and non-numeric arrays."""
    shape = tuple(array.shape)
    if array.dtype == np.bool_:
        raise UserError(
            "a bool array is a mask, not an image; pass the image as uint8 (0..255) or floats in [0, 1]"
        )
    if array.dtype.kind not in "uif":
        raise UserError(f"an image array must hold numbers, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or min(array.shape) == 0:
        raise UserError(f"an image array must be H×W, H×W×C or C×H×W, got shape {shape}")
    first, last = array.shape[0], array.shape[2]
    if first == last:
        raise UserError(
            f"image array of shape {shape} is ambiguous (H×W×C or C×H×W?); move the channels last, e.g. "
            "np.moveaxis(array, 0, -1) for C×H×W"
        )
    return np.moveaxis(array, 0, -1) if first < last else array


def _palette_table(colormap: dict[int, tuple[int, ...]]) -> np.ndarray:
    table = np.zeros((256, 3), dtype=np.uint8)
    for index, rgba in colormap.items():
        table[index] = rgba[:3]
    return table


def _join(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)


def one_line(error: BaseException) -> str:
    """The first line of an error's message (GDAL's can span several, or sit in the cause)."""
    while "previous exception" in str(error) and error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
