"""The units of a distributed prediction, their part files and the assembly of a scene from its parts.

A unit is a band of window rows of one scene (:meth:`aeroseg.prediction.streaming.Grid.bands`); a scene
smaller than a unit is one unit. A worker runs a unit (:func:`run_unit`) and returns its part: the labels
of the pixel rows only its windows cover and its :class:`~aeroseg.prediction.streaming.BandEdges`. The
driver saves each part under ``OUT/.aeroseg-parts/<stem>/`` (temporary name, then renamed) beside a
``plan.json`` that names the input, the settings and the units, so that a rerun of the same command
reuses the parts of an unfinished scene. When every part of a scene is in, :func:`assemble` writes the
scene's files band by band (the seams blended by :func:`~aeroseg.prediction.streaming.blend_seam`), holding
at most two parts in memory, and removes the parts.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from aeroseg.atomic import atomic
from aeroseg.prediction.classes import NODATA, ClassList
from aeroseg.prediction.outputs import ArrayWriter, PredictionFiles
from aeroseg.prediction.streaming import BandEdges, Grid, WindowOptions, blend_seam, segment_band
from aeroseg.raster import RasterSource, ReadOptions, is_url

PARTS = ".aeroseg-parts"


@dataclass(frozen=True)
class Job:
    """The settings every unit of a run shares (they travel to the workers)."""

    classes: ClassList
    read: ReadOptions
    options: WindowOptions
    precision: str
    confidence: bool  # whether the parts keep the confidence (score files or the Python API)
    unit_rows: int  # window rows per unit of a large scene
    model: str  # the model's description (checkpoint and weights): parts of another model are not reused
    settings: str | None = None  # JSON of what made the prediction, recorded in the class raster
    cog: bool = True  # the scene's GeoTIFFs are Cloud-Optimized (aeroseg.prediction.outputs)


@dataclass
class Scene:
    """One input of a distributed run and its units (bands of window rows)."""

    path: str  # the input as given
    location: str  # the input as the workers open it (a local path made absolute)
    paths: dict[str, Path]  # output files (see api.output_paths); empty for the Python API without output
    parts: Path  # folder of the part files
    height: int
    width: int
    bands: list[tuple[int, int]]
    windows: list[int]  # windows of each band
    done: set[int] = field(default_factory=set)  # bands whose part is saved
    failed: str | None = None
    start: float = field(default_factory=time.perf_counter)

    def part(self, band: int) -> Path:
        r0, r1 = self.bands[band]
        return self.parts / f"unit_{r0:06d}_{r1:06d}.npz"


def plan_scene(path: str, paths: dict[str, Path], parts: Path, source: RasterSource, job: Job) -> Scene:
    """The units of ``source``; parts of an earlier run with the same settings are kept, others removed."""
    grid = Grid(source.height, source.width, job.options)
    bands = grid.bands(job.unit_rows)
    windows = [(r1 - r0) * len(grid.xs) for r0, r1 in bands]
    # an absolute path is kept as it is: a STAC input (aeroseg.stac.StacInput) carries its bands with it
    location = (
        path if is_url(path) or not os.path.exists(path) or os.path.isabs(path) else os.path.abspath(path)
    )
    scene = Scene(path, location, paths, parts, source.height, source.width, bands, windows)
    plan = {
        "input": path,
        "height": source.height,
        "width": source.width,
        "bands": bands,
        "job": _describe(job),
    }
    plan_file = parts / "plan.json"
    if plan_file.exists() and json.loads(plan_file.read_text()) == json.loads(json.dumps(plan)):
        scene.done = {b for b in range(len(bands)) if scene.part(b).exists()}
    else:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
        plan_file.write_text(json.dumps(plan) + "\n")
    return scene


def run_unit(
    model: Any, path: str, band: tuple[int, int], job: Job, device: torch.device
) -> dict[str, np.ndarray]:
    """Run one band of window rows of the scene at ``path``; its part as a dict of arrays."""
    with RasterSource(path, job.read) as source:
        grid = Grid(source.height, source.width, job.options)
        r0, r1 = band
        last = grid.ys[r1] if r1 < len(grid.ys) else grid.height
        sink = _Rows(grid.seam_end(r0), last, grid.width, job.confidence)
        counts, edges = segment_band(
            model, source, job.classes, sink, grid, band,
            options=job.options, device=device, precision=job.precision,
        )  # fmt: skip
    arrays = {"ids": sink.ids, "counts": counts}
    if job.confidence:
        arrays["confidence"] = sink.confidence
    for i, windows in edges.top.items():
        arrays.update({f"top_{i}_{x}": p for x, p in windows})
    arrays.update({f"valid_{i}": valid for i, valid in edges.top_valid.items()})
    for k, (sums, weights) in enumerate(edges.carry):
        arrays[f"sums_{k}"], arrays[f"weights_{k}"] = sums, weights
    return arrays


def save_part(scene: Scene, band: int, arrays: dict[str, np.ndarray]) -> None:
    """Write a unit's part under a temporary name and rename it into place."""
    with atomic(scene.part(band)) as tmp, open(tmp, "wb") as file:
        np.savez(file, **arrays)
    scene.done.add(band)


def assemble(scene: Scene, job: Job, *, collect: bool = False) -> tuple[np.ndarray, ArrayWriter | None]:
    """Write the files of a scene whose parts are all saved; the pixel count per id (and the arrays when
    ``collect``). The parts are removed once the files are in place."""
    grid = Grid(scene.height, scene.width, job.options)
    counts = np.zeros(256, dtype=np.int64)
    settings = json.loads(job.settings) if job.settings else None
    with RasterSource(scene.path, job.read) as source:
        sink = PredictionFiles(
            source, job.classes, scene.paths, collect=collect, settings=settings, cog=job.cog
        )
        try:
            above: BandEdges | None = None
            for b, (r0, _) in enumerate(scene.bands):
                with np.load(scene.part(b)) as part:
                    below = _edges(part)
                    if above is not None:
                        counts += blend_seam(grid, job.classes, sink, r0, above, below)
                    ids = part["ids"]
                    if ids.size:
                        confidence = (
                            part["confidence"] if job.confidence else np.full(ids.shape, np.nan, np.float32)
                        )
                        sink.write(Window(0, grid.seam_end(r0), scene.width, len(ids)), ids, confidence)
                    counts += part["counts"]
                above = below
        except BaseException:
            sink.abort()
            raise
        sink.finish()
    shutil.rmtree(scene.parts, ignore_errors=True)
    with_parts = scene.parts.parent
    if with_parts.name == PARTS and not any(with_parts.iterdir()):
        with_parts.rmdir()
    return counts, sink.arrays if collect else None


class _Rows:
    """The labels of the pixel rows [first, last) of a scene, the sink of a unit."""

    def __init__(self, first: int, last: int, width: int, confidence: bool) -> None:
        self.first = first
        self.ids = np.full((max(0, last - first), width), NODATA, dtype=np.uint8)
        self.confidence = np.full(self.ids.shape if confidence else (0, 0), np.nan, dtype=np.float32)

    def write(self, window: Window, ids: np.ndarray, confidence: np.ndarray) -> None:
        rows, cols = window.toslices()
        rows = slice(rows.start - self.first, rows.stop - self.first)
        self.ids[rows, cols] = ids
        if self.confidence.size:
            self.confidence[rows, cols] = confidence


def _edges(part: Any) -> BandEdges:
    """The :class:`BandEdges` of a loaded part file."""
    edges = BandEdges()
    for key in part.files:
        kind, *numbers = key.split("_")
        if kind == "top":
            edges.top.setdefault(int(numbers[0]), []).append((int(numbers[1]), part[key]))
        elif kind == "valid":
            edges.top_valid[int(numbers[0])] = part[key]
    for windows in edges.top.values():
        windows.sort(key=lambda item: item[0])
    k = 0
    while f"sums_{k}" in part.files:
        edges.carry.append((part[f"sums_{k}"], part[f"weights_{k}"]))
        k += 1
    return edges


def _describe(job: Job) -> dict[str, Any]:
    """The settings of a job as JSON values (a part is reused only under the same settings)."""
    return json.loads(json.dumps(asdict(job), default=str))
