"""The last step of a scene of several units, run by a worker once its parts are all written.

By default the scene is ``<stem>.vrt`` (and ``<stem>_scores.vrt``) over its parts in ``<stem>.parts/``
(:mod:`aeroseg.distributed.vrt`). With ``--ray-single-file`` (or ``-o FILE.tif``) the parts are copied
into one ``<stem>.tif``, written in the order in which one process writes it (column stripe by column
stripe, window row by window row), with the same writer: the file is the one process's byte for byte; the
parts are then removed. The overlay and the STAC Item of the outputs are drawn last, as one process does,
then the polygons (``--vector``), which the driver merges into the vector file.
"""

from __future__ import annotations

import bisect
import json
import shutil
import warnings
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from aeroseg.atomic import remove_stale
from aeroseg.distributed.parts import Job, Scene, write_polygons
from aeroseg.distributed.vrt import write_vrt
from aeroseg.prediction.outputs import GeoTiffWriter, write_side_files
from aeroseg.prediction.streaming import GDAL_CACHE_MB, Grid
from aeroseg.raster import RasterSource


def finish_scene(scene: Scene, job: Job) -> None:
    """Write the scene's class raster (VRT or one GeoTIFF), scores, overlay and STAC Item from its parts."""
    with RasterSource(scene.location, job.read) as source:
        units = range(len(scene.bands))
        if scene.paths["classes"].suffix.lower() == ".vrt":
            remove_stale(scene.parts)  # the temporary files of workers lost while writing a part
            for kind in ("classes", "scores"):
                if kind in scene.paths:
                    parts = [(scene.part(u, kind), scene.first_rows[u]) for u in units]
                    write_vrt(scene.paths[kind], parts, scene.height)
            for unit in units:
                scene.part(unit, "record").unlink(missing_ok=True)
        else:
            _single_file(scene, job, source)
            shutil.rmtree(scene.parts, ignore_errors=True)
        settings = json.loads(job.settings) if job.settings else None
        write_side_files(source, job.classes, scene.paths, cog=job.cog, settings=settings)
    write_polygons(scene, job)


def _single_file(scene: Scene, job: Job, source: RasterSource) -> None:
    """Copy the parts into the scene's GeoTIFF(s) as :func:`aeroseg.prediction.streaming.segment_source`
    writes them: the same windows in the same order, under the same GDAL cache."""
    settings = json.loads(job.settings) if job.settings else None
    profile = dict(height=source.height, width=source.width, crs=source.crs, transform=source.transform)
    writer = GeoTiffWriter(
        scene.paths["classes"], profile, job.classes, source=source.path, settings=settings, cog=job.cog,
        scores_path=scene.paths.get("scores"),
    )  # fmt: skip
    grid = Grid(scene.height, scene.width, job.options)
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), _Parts(scene) as parts:
            for c0, c1 in grid.stripes:
                for i, top in enumerate(grid.ys):
                    bottom = grid.ys[i + 1] if i + 1 < len(grid.ys) else grid.height
                    window = Window(c0, top, c1 - c0, bottom - top)
                    writer.write(window, *parts.read(window))
    except BaseException:
        writer.abort()
        raise
    writer.finish()


class _Parts:
    """Reads windows of a scene from its parts (a window lies within one part: the parts end where a
    window row starts), keeping the last part read open."""

    def __init__(self, scene: Scene) -> None:
        self.scene, self.unit, self.files = scene, -1, []

    def __enter__(self) -> _Parts:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close()

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """The class ids and scores (NaN without score parts) of ``window``."""
        unit = bisect.bisect_right(self.scene.first_rows, window.row_off) - 1
        if unit != self.unit:
            self._close()
            kinds = ["classes", *(["scores"] if "scores" in self.scene.paths else [])]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self.files = [rasterio.open(self.scene.part(unit, kind)) for kind in kinds]
            self.unit = unit
        local = Window(
            window.col_off, window.row_off - self.scene.first_rows[unit], window.width, window.height
        )
        ids = self.files[0].read(1, window=local)
        confidence = (
            self.files[1].read(1, window=local)
            if len(self.files) > 1
            else np.full(ids.shape, np.nan, np.float32)
        )
        return ids, confidence

    def _close(self) -> None:
        for file in self.files:
            file.close()
        self.files = []
