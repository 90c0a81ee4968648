"""The units of a distributed prediction and the files their workers write.

A unit is a band of window rows of one scene; a scene smaller than a unit (or written as a PNG) is one
unit, whose worker writes the scene's files as one process does (:func:`run_unit`). A unit of a larger
scene owns the pixel rows from its first window row's start to the next unit's: it runs its own window
rows and, above them, the window rows that also cover its first pixel rows (the halo, recomputed), in the
order of a single pass, so that its pixels are those of one process; it writes them as final part files
``<stem>.parts/rows_<first>_<last>.tif`` (and ``_scores.tif``), then ``rows_<first>_<last>.json`` (its
pixel counts and settings: a rerun of the same command reuses the parts that have one). Once a scene's
parts are all written, a worker finishes it (:mod:`aeroseg.distributed.scenes`). The driver reads no pixel.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from aeroseg.atomic import atomic, remove_stale
from aeroseg.prediction.classes import ClassList
from aeroseg.prediction.outputs import GeoTiffWriter, PredictionFiles
from aeroseg.prediction.streaming import Grid, WindowOptions, segment_band, segment_source
from aeroseg.prediction.vector import VectorWriter
from aeroseg.raster import RasterSource, ReadOptions, is_url


@dataclass(frozen=True)
class Job:
    """The settings every unit of a run shares (they travel to the workers)."""

    classes: ClassList
    read: ReadOptions
    options: WindowOptions
    precision: str
    unit_rows: int  # window rows per unit of a large scene
    settings: str | None = None  # JSON of what made the prediction, recorded in the class rasters
    cog: bool = True  # the GeoTIFFs are Cloud-Optimized (aeroseg.prediction.outputs)
    single: bool = False  # a scene of several units is copied into one <stem>.tif, not a <stem>.vrt
    polygons: tuple[float, float, bool] | None = None  # --vector: min area, simplification, pixel coordinates


@dataclass
class Scene:
    """One input of a distributed run and its units (bands of window rows)."""

    path: str  # the input as given
    location: str  # the input as the workers open it (a local path made absolute)
    paths: dict[str, Path]  # the scene's output files (see aeroseg.prediction.paths.output_paths)
    parts: Path  # folder of the part files of a scene of several units
    height: int
    width: int
    bands: list[tuple[int, int]]  # window rows of each unit
    first_rows: list[int]  # the first pixel row each unit owns, and the scene's height
    windows: list[int]  # windows of each unit (the halo not counted)
    done: set[int] = field(default_factory=set)  # units whose files are written
    counts: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    failed: str | None = None
    start: float = field(default_factory=time.perf_counter)

    @property
    def whole(self) -> bool:
        """Whether the scene is one unit, whose worker writes its files directly."""
        return len(self.bands) == 1

    @property
    def polygons(self) -> Path:
        """The scene's polygons (``--vector``), written by a worker, merged into the vector file by the
        driver (:meth:`aeroseg.prediction.vector.VectorWriter.add_file`)."""
        return self.parts / "polygons.gpkg"

    def part(self, unit: int, kind: str = "classes") -> Path:
        """The part file of ``unit``: classes, scores or record (its JSON)."""
        r0, r1 = self.first_rows[unit], self.first_rows[unit + 1]
        suffix = {"classes": ".tif", "scores": "_scores.tif", "record": ".json"}[kind]
        return self.parts / f"rows_{r0:06d}_{r1:06d}{suffix}"


def unit_bands(height: int, width: int, options: WindowOptions, rows: int) -> list[tuple[int, int]]:
    """The window rows of each unit: runs of ``rows`` window rows (the last one shorter)."""
    count = len(Grid(height, width, options).ys)
    return [(r, min(r + max(1, rows), count)) for r in range(0, count, max(1, rows))]


def plan_scene(
    path: str, paths: dict[str, Path], source: RasterSource, job: Job, bands: list[tuple[int, int]]
) -> Scene:
    """The scene of ``source`` in the units ``bands``; the parts of an earlier run of the same settings
    are kept (their units are done), any other file in its parts folder is removed."""
    grid = Grid(source.height, source.width, job.options)
    first_rows = [0, *(grid.ys[r0] for r0, _ in bands[1:]), source.height]
    windows = [(r1 - r0) * len(grid.xs) for r0, r1 in bands]
    # an absolute path is kept as it is: a STAC input (aeroseg.stac.StacInput) carries its bands with it
    location = (
        path if is_url(path) or not os.path.exists(path) or os.path.isabs(path) else os.path.abspath(path)
    )
    parts = paths["classes"].with_name(f"{paths['classes'].stem}.parts")
    scene = Scene(path, location, paths, parts, source.height, source.width, bands, first_rows, windows)
    if scene.whole:
        shutil.rmtree(parts, ignore_errors=True)
        return scene
    kinds = ["classes", "record", *(["scores"] if "scores" in paths else [])]
    keep = set()
    for unit in range(len(bands)):
        record = _record(scene.part(unit, "record"))
        if record is not None and record["settings"] == job.settings:
            if all(scene.part(unit, kind).exists() for kind in kinds):
                scene.done.add(unit)
                scene.counts += np.array(record["counts"], dtype=np.int64)
                keep.update(scene.part(unit, kind) for kind in kinds)
    if parts.is_dir():
        remove_stale(parts)
        for file in parts.iterdir():
            if file not in keep:
                file.unlink()
    return scene


def run_unit(model: Any, scene: Scene, unit: int, job: Job, device: torch.device) -> np.ndarray:
    """Run one unit on a worker and write its files; the pixel count of every class id it wrote."""
    settings = json.loads(job.settings) if job.settings else None
    with RasterSource(scene.location, job.read) as source:
        if scene.whole:  # the scene's own files, as one process writes them
            files = PredictionFiles(
                source, job.classes, scene.paths, collect=False, settings=settings, cog=job.cog
            )
            try:
                counts = segment_source(
                    model, source, job.classes, files,
                    options=job.options, device=device, precision=job.precision,
                )  # fmt: skip
            except BaseException:
                files.abort()
                raise
            files.finish()
            write_polygons(scene, job)
            return counts
        grid = Grid(source.height, source.width, job.options)
        first, last = scene.first_rows[unit], scene.first_rows[unit + 1]
        halo = next(i for i, y in enumerate(grid.ys) if y + grid.window > first)  # rows covering `first`
        scene.parts.mkdir(parents=True, exist_ok=True)
        profile = dict(
            height=last - first,
            width=source.width,
            crs=source.crs,
            transform=source.transform @ rasterio.Affine.translation(0, first),
        )
        writer = GeoTiffWriter(
            scene.part(unit), profile, job.classes, source=source.path, settings=settings, cog=job.cog,
            scores_path=scene.part(unit, "scores") if "scores" in scene.paths else None,
        )  # fmt: skip
        sink = _Rows(writer, first, last)
        try:
            segment_band(
                model, source, job.classes, sink, grid, (halo, scene.bands[unit][1]),
                options=job.options, device=device, precision=job.precision,
            )  # fmt: skip
        except BaseException:
            writer.abort()
            raise
        writer.finish()
    record = {"settings": job.settings, "counts": sink.counts.tolist()}
    with atomic(scene.part(unit, "record")) as tmp:
        tmp.write_text(json.dumps(record) + "\n")
    return sink.counts


def write_polygons(scene: Scene, job: Job) -> None:
    """The polygons of the scene's finished class raster into :attr:`Scene.polygons` (``--vector``)."""
    if job.polygons is None:
        return
    min_area, simplify, pixel_coordinates = job.polygons
    scene.parts.mkdir(parents=True, exist_ok=True)
    writer = VectorWriter(
        scene.polygons, min_area=min_area, simplify=simplify, pixel_coordinates=pixel_coordinates
    )
    try:
        writer.add(scene.paths["classes"], source=scene.path)
    except BaseException:
        writer.abort()
        raise
    writer.finish()


class _Rows:
    """The sink of a unit: the pixel rows [first, last) of the scene, written to the unit's part files."""

    def __init__(self, writer: GeoTiffWriter, first: int, last: int) -> None:
        self.writer, self.first, self.last = writer, first, last
        self.counts = np.zeros(256, dtype=np.int64)

    def write(self, window: Window, ids: np.ndarray, confidence: np.ndarray) -> None:
        top = window.row_off
        a, b = max(self.first, top), min(self.last, top + window.height)
        if b <= a:  # rows of the halo, owned by the unit above
            return
        ids, confidence = ids[a - top : b - top], confidence[a - top : b - top]
        self.writer.write(Window(window.col_off, a - self.first, window.width, b - a), ids, confidence)
        self.counts += np.bincount(ids.ravel(), minlength=256)


def _record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
