"""The entry points of a distributed prediction: ``aeroseg predict --ray`` and ``aeroseg.prediction(ray=...)``.

The driver (the process that runs the command) opens every input to plan its units (its size, not its
pixels), starts the workers and tracks the units; the workers write every output file. The driver and the
workers need the inputs (shared storage or URLs) and the output folder; the workers the model's weights.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError
from rasterio.windows import Window

from aeroseg.atomic import exclusive
from aeroseg.distributed import require_ray
from aeroseg.distributed.parts import Job, Scene, plan_scene, unit_bands
from aeroseg.errors import UserError
from aeroseg.prediction import paths as places
from aeroseg.prediction.checks import no_crs_message
from aeroseg.prediction.classes import ClassList
from aeroseg.prediction.outputs import PredictionFiles
from aeroseg.prediction.settings import finished, remove_side_files
from aeroseg.prediction.streaming import WindowOptions
from aeroseg.progress import write_line
from aeroseg.raster import RasterSource, ReadOptions, is_url, one_line
from aeroseg.registry import ModelRequest
from aeroseg.stac import StacInput

POLYGONS = "_polygons"  # a record's key to its scene's polygons, written by a worker (not in the summary)
UNIT_PIXELS = 32_000_000  # default pixels of a unit: a larger scene is split into bands of about this size
MIN_UNIT_ROWS = 16  # ... of at least this many window rows: the halo (a window row a unit) stays <= 1/16


def records_on_ray(
    args: argparse.Namespace,
    inputs: list[str],
    classes: ClassList,
    read: ReadOptions,
    options: WindowOptions,
    out_file: Path | None,
    settings: dict[str, Any],
    clashes: dict[str, str],
    request: ModelRequest,
) -> list[dict[str, Any]]:
    """Predict ``inputs`` on Ray as ``aeroseg predict --ray`` does; one record per input, in order.

    ``out_file``: the one class raster ``-o`` names, else None (``-o`` is a folder); ``settings`` are
    recorded in the class rasters (see :func:`aeroseg.prediction.settings.prediction_settings`); ``clashes``
    maps inputs whose outputs would take an earlier input's names to their one-line reason. The lock of
    every class raster (:func:`aeroseg.atomic.exclusive`) is held from its planning until its scene is
    finished (or the run ends), so the locks held follow the scenes in flight, not the inputs."""
    require_ray()
    from aeroseg.distributed.runner import Cluster, run_units
    from aeroseg.distributed.session import session

    model = {
        **dataclasses.asdict(request),
        "checkpoint": _absolute(request.checkpoint),
        "weights": {k: _absolute(v) for k, v in request.weights.items()},
    }
    job = Job(
        classes, read, options, args.precision, args.ray_unit_rows or 0, json.dumps(settings, sort_keys=True),
        args.cog, single=args.ray_single_file or out_file is not None,
        polygons=(args.min_area, args.simplify, args.vector_pixels) if args.vector else None,
    )  # fmt: skip
    single = len(inputs) == 1
    records: dict[str, dict[str, Any]] = {}
    locks: dict[str, contextlib.ExitStack] = {}  # input -> the lock of its class raster, while in flight

    def fail(path: str, message: str) -> None:
        if single:
            raise UserError(message)
        records[path] = dict(records.get(path, {"input": path}), status="failed", error=message)
        write_line(f"aeroseg predict: skipped: {message}")

    def planned() -> Iterator[Scene]:
        """The scenes with work left, planned as the workers need them (none is held once finished)."""
        for path in inputs:
            try:
                if path in clashes:
                    raise UserError(clashes[path])
                scene = _plan(path, out_file, args, job, settings, records, locks)
            except (UserError, RasterioError, OSError) as error:
                fail(path, str(error) if isinstance(error, UserError) else f"{path}: {one_line(error)}")
                continue
            if scene is not None:
                yield scene

    def on_scene(scene: Scene) -> None:
        with locks.pop(scene.path, contextlib.ExitStack()):
            _finished(scene)

    def _finished(scene: Scene) -> None:
        if scene.failed:
            fail(scene.path, scene.failed)
            return
        names = classes.ids_to_names
        counts = scene.counts
        pixels = {name: int(counts[i]) for i, name in enumerate(names)} | {"nodata": int(counts[255])}
        seconds = round(time.perf_counter() - scene.start, 3)
        records[scene.path].update(status="ok", seconds=seconds, pixels=pixels, units=len(scene.bands))
        if job.polygons is not None:
            records[scene.path][POLYGONS] = str(scene.polygons)
        if args.overwrite:  # an earlier run's scores or overlay would pass for this run's
            remove_side_files(scene.paths["classes"], scene.paths, scene.path)

    cluster = Cluster(args.ray, args.ray_workers, args.ray_threads, args.device)

    def release() -> None:  # the locks of the scenes not finished (interrupted, failed)
        for lock in locks.values():
            lock.close()

    scenes = planned()
    with contextlib.ExitStack() as ending:
        ending.callback(release)
        first = next(scenes, None)  # Ray is started only when there is work
        with session(args.ray, verbose=args.verbose) if first else contextlib.nullcontext():
            work = itertools.chain([first], scenes) if first else iter(())
            stats = run_units(work, job, model, cluster, quiet=args.quiet, on_scene=on_scene)
    if not args.quiet and stats.units:
        rate = stats.windows / max(stats.seconds, 1e-9)
        print(
            f"aeroseg predict: ray: {stats.units} units on {stats.workers} workers in {stats.seconds:.1f} s, "
            f"{stats.windows} windows ({rate:.1f}/s), {stats.retried} retried, {stats.failed} failed, "
            f"{stats.reused} reused from an earlier run",
            file=sys.stderr,
        )
    for record in records.values():
        record.setdefault("ray", {"retried_units": stats.retried, "reused_units": stats.reused})
    return [records[path] for path in inputs]


def predict_on_ray(
    model: Any,
    path: str,
    classes: ClassList,
    paths: dict[str, Path] | None,
    *,
    read: ReadOptions,
    options: WindowOptions,
    precision: str,
    device: torch.device | None,
    address: str,
    progress: bool,
    cog: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict one image on Ray for :func:`aeroseg.prediction`; its class map and scores."""
    require_ray()
    from aeroseg.distributed.runner import Cluster, run_units
    from aeroseg.distributed.session import connect

    connect(address)
    job = Job(classes, read, options, precision, 0, cog=cog, single=True)
    threads = torch.get_num_threads()  # CPU workers compute as this process does: the same results
    cluster = Cluster(address, threads=threads, device="auto" if device is None else device.type)
    tif = bool(paths) and paths["classes"].suffix.lower() != ".png"  # else PNGs, written here from arrays
    with tempfile.TemporaryDirectory(prefix="aeroseg-ray-") as folder, RasterSource(path, read) as source:
        written = dict(paths) if tif and paths else {"classes": Path(folder) / "scene.tif"}
        written.setdefault("scores", Path(folder) / "scores.tif")  # the API returns the scores
        job = _sized(job, source)
        bands = unit_bands(source.height, source.width, options, job.unit_rows)
        scene = plan_scene(path, written, source, job, bands)
        run_units([scene], job, model, cluster, quiet=not progress, on_scene=lambda s: None)
        if scene.failed:
            raise UserError(scene.failed)
        with rasterio.open(written["classes"]) as ids, rasterio.open(written["scores"]) as scores:
            arrays = ids.read(1), scores.read(1)
        if paths and not tif:
            files = PredictionFiles(source, classes, paths, collect=False, cog=cog)
            files.write(Window(0, 0, source.width, source.height), *arrays)
            files.finish()
    return arrays


def _plan(
    path: str,
    out_file: Path | None,
    args: argparse.Namespace,
    job: Job,
    settings: dict[str, Any],
    records: dict[str, dict[str, Any]],
    locks: dict[str, contextlib.ExitStack],
) -> Scene | None:
    """The scene of one input, or None when its outputs exist with the same settings (a skipped record)."""
    with RasterSource(path, job.read) as source:
        suffix = places.class_suffix(source)
        class_path = out_file or Path(args.output) / f"{places.input_stem(path)}{suffix}"
        job = _sized(job, source)
        bands = unit_bands(source.height, source.width, job.options, job.unit_rows)
        if suffix == ".png":  # a plain picture is one unit: one process holds it in memory too
            bands = [(bands[0][0], bands[-1][1])]
        item = isinstance(path, StacInput)  # the STAC Item of its outputs too
        if len(bands) > 1 and not job.single and not _finished_as(class_path, args, settings, item):
            class_path = class_path.with_suffix(".vrt")  # the parts stay, a VRT over them
        paths = places.output_paths(class_path, scores=args.scores, overlay=args.overlay, item=item)
        places.refuse_overwriting_input(path, paths, args.vector)
        record: dict[str, Any] = {"input": path, "outputs": {k: str(v) for k, v in paths.items()}}
        records[path] = dict(record, height=source.height, width=source.width)
        if args.vector and source.map_crs is None and not args.vector_pixels:
            raise UserError(no_crs_message(path, "--vector-pixels"))
        places.make_parent(class_path)
        locks[path] = contextlib.ExitStack()  # released when the scene is finished
        locks[path].enter_context(exclusive(class_path, what="aeroseg predict"))
        if finished(class_path, paths, settings, overwrite=args.overwrite):
            records[path]["status"] = "skipped"
            locks.pop(path).close()
            return None
        if source.no_contrast:
            write_line(f"aeroseg predict: warning: {source.no_contrast}")
        if args.overwrite:
            shutil.rmtree(class_path.with_name(f"{class_path.stem}.parts"), ignore_errors=True)
        return plan_scene(path, paths, source, job, bands)


def _finished_as(class_path: Path, args: argparse.Namespace, settings: dict[str, Any], item: bool) -> bool:
    """Whether the scene's outputs exist as one ``<stem>.tif`` (of one process or a single-file run)."""
    paths = places.output_paths(class_path, scores=args.scores, overlay=args.overlay, item=item)
    return class_path.exists() and finished(class_path, paths, settings, overwrite=args.overwrite)


def _sized(job: Job, source: RasterSource) -> Job:
    """``job`` with its unit rows set unless given: about :data:`UNIT_PIXELS` a unit, at least
    :data:`MIN_UNIT_ROWS` window rows (a unit recomputes the window row above it)."""
    if job.unit_rows:
        return job
    stride = max(1, int(job.options.window * (1 - job.options.overlap)))
    rows = max(MIN_UNIT_ROWS, round(UNIT_PIXELS / (max(source.width, 1) * stride)))
    return Job(**{**job.__dict__, "unit_rows": rows})


def _absolute(path: str | None) -> str | None:
    """A local path made absolute (workers may run elsewhere); hub ids, URLs and None as they are."""
    if path is None or is_url(path) or not os.path.exists(path):
        return path
    return os.path.abspath(path)
