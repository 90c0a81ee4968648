"""Segmentation runs of ``aeroseg serve``: one at a time, in a worker thread, with their progress.

A run segments a window of a raster (the map's view) or the whole raster with
:func:`aeroseg.prediction.api.run_prediction`, the code of ``aeroseg predict``, into a class GeoTIFF on the
raster's own pixel grid (CRS and transform of the input, shifted to the window). The page polls the run's
progress, then shows the GeoTIFF as map tiles; the polygons (GeoPackage) are made from it on first
download. The files of the last :data:`KEPT_JOBS` runs are kept in the server's work folder.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.errors import RasterioError
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from aeroseg.errors import UserError
from aeroseg.inference import FeatureCache
from aeroseg.prediction.api import run_prediction
from aeroseg.prediction.classes import NODATA, ClassList
from aeroseg.prediction.outputs import class_colours
from aeroseg.prediction.streaming import WindowOptions, count_windows
from aeroseg.prediction.vector import VectorWriter
from aeroseg.raster import RasterSource, one_line
from aeroseg.serve.catalog import Raster

KEPT_JOBS = 16


class ViewSource:
    """The pixels of ``window`` of an open :class:`RasterSource`, read as a source of that size (same bands
    and scaling as the whole raster, so a view is segmented exactly as a crop of the file would be)."""

    def __init__(self, source: RasterSource, window: Window) -> None:
        self._source, self._window = source, window
        self.path = source.path
        self.height, self.width = int(window.height), int(window.width)
        self.crs = source.crs
        self.transform = window_transform(window, source.transform)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        shifted = Window(
            window.col_off + self._window.col_off,
            window.row_off + self._window.row_off,
            window.width,
            window.height,
        )
        return self._source.read(shifted)


@dataclass
class Job:
    """One segmentation run and, when done, its class GeoTIFF."""

    id: str
    raster: Raster
    classes: ClassList
    window: Window
    folder: Path
    total: int
    done: int = 0
    status: str = "queued"  # queued, running, done, error
    error: str | None = None
    counts: list[int] = field(default_factory=list)
    cache_hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def class_path(self) -> Path:
        return self.folder / f"{Path(self.raster.name).stem}_classes.tif"

    @property
    def vector_path(self) -> Path:
        return self.folder / f"{Path(self.raster.name).stem}_polygons.gpkg"

    def info(self) -> dict[str, Any]:
        names, w = self.classes.ids_to_names, self.window
        colours = class_colours(names)
        pixels = {names[i]: self.counts[i] for i in range(len(names))} if self.counts else {}
        return {
            "id": self.id,
            "raster": self.raster.id,
            "status": self.status,
            "done": self.done,
            "total": self.total,
            "error": self.error,
            "window": [
                int(v) for v in (w.col_off, w.row_off, w.width, w.height)
            ],  # column, row, width, height
            "classes": [
                {
                    "id": i,
                    "name": n,
                    "colour": "#{:02x}{:02x}{:02x}".format(*colours[i]),
                    "pixels": pixels.get(n),
                }
                for i, n in enumerate(names)
            ],
            "cache_hits": self.cache_hits,
        }


class JobRunner:
    """Runs segmentation jobs one after another (the model is shared) and keeps the recent ones."""

    def __init__(self, work_dir: Path, options: WindowOptions, device: torch.device, precision: str) -> None:
        self.work_dir = work_dir
        self.options, self.device, self.precision = options, device, precision
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aeroseg-segment")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(
        self, model: Any, cache: FeatureCache, raster: Raster, classes: ClassList, window: Window
    ) -> Job:
        folder = self.work_dir / "jobs" / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True)
        total = count_windows(int(window.height), int(window.width), self.options)
        job = Job(folder.name, raster, classes, window, folder, total)
        with self._lock:
            self._jobs[job.id] = job
            for old in list(self._jobs)[:-KEPT_JOBS]:
                if self._jobs[old].status in ("done", "error"):
                    shutil.rmtree(self._jobs.pop(old).folder, ignore_errors=True)
        self._executor.submit(self._run, job, model, cache)
        return job

    def job(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise UserError(f"no segmentation {job_id!r} (the server keeps the last {KEPT_JOBS})")
            return self._jobs[job_id]

    def _run(self, job: Job, model: Any, cache: FeatureCache) -> None:
        job.status = "running"
        source = job.raster.source
        whole = (int(job.window.width), int(job.window.height)) == (source.width, source.height)
        view = source if whole else ViewSource(source, job.window)
        hits = cache.hits

        def advance(n: int) -> None:
            job.done += n

        try:
            _, counts = run_prediction(
                model, view, job.classes, {"classes": job.class_path}, collect=False, options=self.options,
                device=self.device, precision=self.precision, cache=cache, on_windows=advance,
            )  # fmt: skip
        except (UserError, RasterioError, OSError) as error:
            job.error, job.status = one_line(error), "error"
            return
        except Exception as error:  # shown in the page as one line; the server keeps running
            job.error, job.status = f"segmentation failed: {one_line(error)}", "error"
            return
        job.counts = [int(c) for c in counts[: len(job.classes.ids_to_names)]] + [int(counts[NODATA])]
        job.cache_hits = cache.hits - hits
        job.done, job.status = job.total, "done"

    def polygons(self, job: Job) -> Path:
        """The job's polygons as a GeoPackage, made on first call."""
        with job.lock:
            if not job.vector_path.exists():
                writer = VectorWriter(job.vector_path)
                try:
                    writer.add(job.class_path, source=job.raster.name)
                except BaseException:
                    writer.abort()
                    raise
                writer.finish()
        return job.vector_path

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
