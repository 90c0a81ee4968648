"""What GDAL may open for ``aeroseg serve``: three formats, local files named by their real path, no network.

GDAL recognises a file by its content, not its name, and some of its formats read other files: a VRT
(XML) names source rasters anywhere on disk or on the web (``/vsicurl/http://...``), and its
``VRTRawRasterBand`` reads the bytes of any file as pixels. So every raster the server opens (uploads,
files under the roots, its own class rasters) is opened with the drivers of :data:`ALLOWED_DRIVERS` only
(:func:`aeroseg.raster.open_dataset`): a VRT, or any other format, is refused in one line before a
driver that follows references has seen it. Paths from the page are checked by :func:`client_path`
before they are resolved under the roots, and :data:`GDAL_SANDBOX` switches off GDAL's network file
systems and raw VRT bands for the server process as a second wall.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from aeroseg.errors import UserError
from aeroseg.raster import one_line, open_dataset

# GTiff reads GeoTIFF and COG (the COG driver only writes). JPEG 2000 is left out: its GDAL drivers are
# optional in builds and uploads only accept the suffixes of aeroseg.raster.IMAGE_SUFFIXES.
ALLOWED_DRIVERS = ("GTiff", "PNG", "JPEG")
FORMAT_NAMES = "GeoTIFF, PNG or JPEG"

GDAL_SANDBOX = {
    # /vsicurl/ and every network file system built on it (/vsis3/, /vsigs/, /vsiaz/, ...) open only
    # this one name, which is no URL: no request leaves the server (GDAL's IsAllowedFilename).
    "CPL_VSIL_CURL_ALLOWED_FILENAME": "/vsicurl/aeroseg-serve-opens-no-url",
    # Raw VRT bands only on files beside the VRT (honoured by GDAL >= 3.12; the driver allow-list keeps
    # VRTs out on every version).
    "GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE": "SIBLING_OR_CHILD_OF_VRT_PATH",
    "GDAL_VRT_ENABLE_PYTHON": "NO",  # no Python pixel functions
}

MAX_PATH_CHARS = 1024  # a path from the page is at most this long ...
MAX_NAME_BYTES = 255  # ... and each of its parts at most this many bytes (Linux NAME_MAX)
_VSI = re.compile(r"^[/\\]+vsi", re.IGNORECASE)  # /vsicurl/, /vsizip/, ...: GDAL's virtual file systems


@contextmanager
def gdal_sandbox() -> Iterator[None]:
    """Set :data:`GDAL_SANDBOX` for this process (as environment variables, which GDAL reads at every
    lookup and which every thread shares), restoring the previous values on exit."""
    previous = {key: os.environ.get(key) for key in GDAL_SANDBOX}
    os.environ.update(GDAL_SANDBOX)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def client_path(name: str) -> str:
    """``name`` from the page, unchanged, when it can be a file path; :class:`UserError` (one line) for an
    empty, over-long or control-character path and a GDAL virtual file system (``/vsi...``). (GDAL's
    ``DRIVER:...`` names need no rule: the server hands GDAL only resolved absolute paths.)"""
    if not name or len(name) > MAX_PATH_CHARS:
        raise UserError(f"a path must have 1 to {MAX_PATH_CHARS} characters, got {len(name)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError("a path may not contain control characters (such as a null byte)")
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in re.split(r"[/\\]", name)):
        raise UserError(f"a file or folder name in the path is longer than {MAX_NAME_BYTES} bytes")
    if _VSI.match(name):
        raise UserError(f"{name[:40]!r}: GDAL virtual file systems (/vsi...) are not opened; give a file")
    return name


@dataclass(frozen=True)
class Probe:
    """What a raster is, read from its header only."""

    driver: str  # one of ALLOWED_DRIVERS
    width: int
    height: int
    block: tuple[int, int]  # width, height of the first band's blocks (GeoTIFF tiles or strips)


def probe(path: str, *, label: str) -> Probe:
    """The format, size and block size of the raster at ``path``, opened with :data:`ALLOWED_DRIVERS`
    only and closed again; :class:`UserError` naming ``label`` for another format or an unreadable file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with open_dataset(path, ALLOWED_DRIVERS) as ds:
                rows, cols = ds.block_shapes[0]
                return Probe(ds.driver, ds.width, ds.height, (cols, rows))
    except UserError:
        raise UserError(f"{label}: not a {FORMAT_NAMES} file (the only formats this server opens)") from None
    except (RasterioError, OSError) as error:
        raise UserError(f"cannot read {label}: {one_line(error)}") from None


def open_known(path: str, driver: str) -> rasterio.DatasetReader:
    """``path`` opened with ``driver`` (one of :data:`ALLOWED_DRIVERS`, found by :func:`probe` when the
    raster was first opened), so a file replaced by another format since is refused."""
    if driver not in ALLOWED_DRIVERS:
        raise UserError(f"{os.path.basename(path)}: the {driver} format is not opened by this server")
    return rasterio.open(path, driver=driver)
