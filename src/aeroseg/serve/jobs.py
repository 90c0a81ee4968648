"""Segmentation runs of ``aeroseg serve``: one at a time, in a worker thread, with their progress.

At most ``Limits.queued_jobs`` runs wait or run at once (:class:`aeroseg.serve.limits.Busy` beyond). A run
is cancelled (:meth:`JobRunner.cancel`, ``DELETE /api/jobs/{id}``) at its next window: every window read
and every batch checks the run's flag and stops it with :class:`Cancelled`, which removes its files.

A run segments a window of a raster (the map's view) or the whole raster with
:func:`aeroseg.prediction.api.run_prediction`, the code of ``aeroseg predict``, into a class GeoTIFF on the
raster's own pixel grid (CRS and transform of the input, shifted to the window), a Cloud-Optimized GeoTIFF
whose overviews keep a tile of a large run zoomed out within the tile limit. The page polls the run's
progress, then shows the GeoTIFF as map tiles; the polygons (GeoPackage, GeoJSON or GeoParquet) are made
from it on their first download. The files of the last :data:`KEPT_JOBS` runs are kept in the server's work folder.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
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
from aeroseg.serve.limits import Busy

KEPT_JOBS = 16
VECTOR_FORMATS = {  # polygon downloads: suffix -> media type
    "gpkg": "application/geopackage+sqlite3",
    "geojson": "application/geo+json",
    "parquet": "application/vnd.apache.parquet",  # GeoParquet (the geo extra)
}
ACTIVE = ("queued", "running")


class Cancelled(Exception):
    """The run was cancelled (raised in the worker at the next window)."""


class ViewSource:
    """The pixels of ``window`` of an open :class:`RasterSource`, read as a source of that size (same bands
    and scaling as the whole raster, so a view is segmented exactly as a crop of the file would be); a
    read raises :class:`Cancelled` once ``cancelled`` is set."""

    def __init__(self, source: RasterSource, window: Window, cancelled: threading.Event) -> None:
        self._source, self._window, self._cancelled = source, window, cancelled
        self.path = source.path
        self.height, self.width = int(window.height), int(window.width)
        self.crs = source.crs
        self.transform = window_transform(window, source.transform)

    def georeferencing(self) -> dict:
        """The CRS and transform of the view (keywords of ``rasterio.open(..., "w")``)."""
        return {"crs": self.crs, "transform": self.transform}

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        if self._cancelled.is_set():
            raise Cancelled
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
    status: str = "queued"  # queued, running, done, error, cancelled
    precision: str = "fp32"  # the autocast precision it runs in
    error: str | None = None
    counts: list[int] = field(default_factory=list)
    cache_hits: int = 0
    encoded: int = 0  # windows this job ran the image encoders on (0: a new class list on cached features)
    lock: threading.Lock = field(default_factory=threading.Lock)  # making the polygons
    overviews: tuple[int, ...] = ()  # overview factors of the class GeoTIFF
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)  # no longer queued or running
    release: Callable[[], None] = lambda: None  # called once when it finishes (the raster may close)

    @property
    def class_path(self) -> Path:
        return self.folder / f"{Path(self.raster.name).stem}_classes.tif"

    def vector_path(self, kind: str) -> Path:
        """The polygons file of a format of :data:`VECTOR_FORMATS`."""
        return self.folder / f"{Path(self.raster.name).stem}_polygons.{kind}"

    def info(self) -> dict[str, Any]:
        names, w = self.classes.ids_to_names, self.window
        colours = class_colours(names)
        pixels = {names[i]: self.counts[i] for i in range(len(names))} if self.counts else {}
        return {
            "id": self.id,
            "raster": self.raster.id,
            "status": self.status,
            "precision": self.precision,
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
            "encoded": self.encoded,
        }


def add_overviews(path: Path) -> tuple[int, ...]:
    """The overview factors of a class GeoTIFF: a Cloud-Optimized GeoTIFF's own (runs write one), else
    nearest-neighbour overviews added (factors 2, 4, ... down to one 256² tile)."""
    with rasterio.open(path, driver="GTiff") as ds:
        if ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG":  # changing it would break its layout
            return tuple(ds.overviews(1))
    with rasterio.open(path, "r+", driver="GTiff") as ds:
        side, factors = max(ds.width, ds.height), []
        while side / 2 ** (len(factors) + 1) >= 256:
            factors.append(2 ** (len(factors) + 1))
        if factors:
            ds.build_overviews(factors, Resampling.nearest)
    return tuple(factors)


class JobRunner:
    """Runs segmentation jobs one after another (the model is shared) and keeps the recent ones."""

    def __init__(
        self, work_dir: Path, options: WindowOptions, device: torch.device, precision: str, *, max_active: int
    ) -> None:
        self.work_dir = work_dir
        self.options, self.device, self.precision = options, device, precision
        self.max_active = max_active  # jobs queued or running at once
        self.encodings = 0  # windows encoded since the server started (every job's ``encoded``)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aeroseg-segment")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(
        self,
        model: Any,
        cache: FeatureCache,
        raster: Raster,
        classes: ClassList,
        window: Window,
        *,
        release: Callable[[], None],
    ) -> Job:
        """Queue a run; ``release`` is called once it has finished. :class:`Busy` (and ``release`` not
        called) when :attr:`max_active` runs are queued or running."""
        total = count_windows(int(window.height), int(window.width), self.options)
        with self._lock:
            if sum(j.status in ACTIVE for j in self._jobs.values()) >= self.max_active:
                raise Busy(
                    f"{self.max_active} segmentations are queued or running (--max-queued-jobs); "
                    "try again when one has finished, or cancel one"
                )
            folder = self.work_dir / "jobs" / uuid.uuid4().hex[:12]
            folder.mkdir(parents=True)
            job = Job(
                folder.name, raster, classes, window, folder, total, precision=self.precision, release=release
            )
            self._jobs[job.id] = job
            for old in list(self._jobs)[:-KEPT_JOBS]:
                if self._jobs[old].status not in ACTIVE:
                    shutil.rmtree(self._jobs.pop(old).folder, ignore_errors=True)
        self._executor.submit(self._run, job, model, cache)
        return job

    def job(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise UserError(f"no segmentation {job_id[:40]!r} (the server keeps the last {KEPT_JOBS})")
            return self._jobs[job_id]

    def cancel(self, job_id: str, *, wait: float = 10.0) -> Job:
        """Stop the job if it is queued or running (waiting up to ``wait`` seconds for it to reach its next
        window) and delete its files: afterwards it reads ``cancelled``."""
        job = self.job(job_id)
        job.cancelled.set()
        with self._lock:
            if job.status == "queued":  # the worker skips it when it comes to it
                job.status = "cancelled"
                self._finish(job)
        job.finished.wait(wait)
        with self._lock:
            if job.finished.is_set():
                job.status = "cancelled"
                shutil.rmtree(job.folder, ignore_errors=True)
        return job

    def _finish(self, job: Job) -> None:
        if not job.finished.is_set():
            job.finished.set()
            job.release()

    def _run(self, job: Job, model: Any, cache: FeatureCache) -> None:
        with self._lock:
            if job.status != "queued":
                return
            job.status = "running"
        try:
            self._segment(job, model, cache)
        finally:
            with self._lock:
                self._finish(job)

    def _segment(self, job: Job, model: Any, cache: FeatureCache) -> None:
        view = ViewSource(job.raster.source, job.window, job.cancelled)
        hits, encoded = cache.hits, cache.encoded

        def advance(n: int) -> None:
            job.done += n
            if job.cancelled.is_set():
                raise Cancelled

        try:
            _, counts = run_prediction(
                model, view, job.classes, {"classes": job.class_path}, collect=False, options=self.options,
                device=self.device, precision=self.precision, cache=cache, on_windows=advance,
            )  # fmt: skip
            job.overviews = add_overviews(job.class_path)
        except Cancelled:
            job.status = "cancelled"
            shutil.rmtree(job.folder, ignore_errors=True)
            return
        except (UserError, RasterioError, OSError) as error:
            job.error, job.status = one_line(error), "error"
            return
        except Exception as error:  # shown in the page as one line; the server keeps running
            job.error, job.status = f"segmentation failed: {one_line(error)}", "error"
            return
        job.counts = [int(c) for c in counts[: len(job.classes.ids_to_names)]] + [int(counts[NODATA])]
        job.cache_hits, job.encoded = cache.hits - hits, cache.encoded - encoded
        self.encodings += job.encoded
        job.done, job.status = job.total, "done"

    def polygons(self, job: Job, kind: str = "gpkg") -> Path:
        """The job's polygons as a GeoPackage, GeoJSON or GeoParquet file (``kind``), made on first call."""
        if kind not in VECTOR_FORMATS:
            raise UserError(f"polygons come as {', '.join(VECTOR_FORMATS)}, not {kind[:20]!r}")
        path = job.vector_path(kind)
        with job.lock:
            if not path.exists():
                writer = VectorWriter(path)
                try:
                    writer.add(job.class_path, source=job.raster.name)
                except BaseException:
                    writer.abort()
                    raise
                writer.finish()
        return path

    def close(self, wait: float) -> None:
        """Cancel every job and give the running one ``wait`` seconds to stop at its next window."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancelled.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait
        for job in jobs:
            if job.status == "running":
                job.finished.wait(max(0.0, deadline - time.monotonic()))
