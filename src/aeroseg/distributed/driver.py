"""The entry points of a distributed prediction: ``aeroseg predict --ray`` and ``aeroseg.prediction(ray=...)``.

The driver (the process that runs the command) opens every input to plan its units, starts the workers,
saves the parts as they come back and writes each scene's files once its parts are in; it needs read
access to the inputs and write access to the output folder. The workers need the inputs (shared storage
or URLs) and the model's weights, not the output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.errors import RasterioError

from aeroseg.atomic import exclusive
from aeroseg.distributed import require_ray
from aeroseg.distributed.parts import PARTS, Job, Scene, assemble, plan_scene
from aeroseg.errors import UserError
from aeroseg.prediction import paths as places
from aeroseg.prediction.checks import no_crs_message
from aeroseg.prediction.classes import ClassList
from aeroseg.prediction.settings import finished, remove_side_files
from aeroseg.prediction.streaming import WindowOptions
from aeroseg.progress import write_line
from aeroseg.raster import RasterSource, ReadOptions, is_url, one_line
from aeroseg.registry import ModelRequest
from aeroseg.stac import StacInput

UNIT_PIXELS = 32_000_000  # default pixels of a unit: a larger scene is split into bands of about this size


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
    every class raster (:func:`aeroseg.atomic.exclusive`) is held from its planning to the end of the run."""
    with contextlib.ExitStack() as locks:
        return _records(args, inputs, classes, read, options, out_file, settings, clashes, request, locks)


def _records(
    args: argparse.Namespace,
    inputs: list[str],
    classes: ClassList,
    read: ReadOptions,
    options: WindowOptions,
    out_file: Path | None,
    settings: dict[str, Any],
    clashes: dict[str, str],
    request: ModelRequest,
    locks: contextlib.ExitStack,
) -> list[dict[str, Any]]:
    require_ray()
    from aeroseg.distributed.runner import Cluster, connect, run_units

    model = {
        **dataclasses.asdict(request),
        "checkpoint": _absolute(request.checkpoint),
        "weights": {k: _absolute(v) for k, v in request.weights.items()},
    }
    job = Job(
        classes, read, options, args.precision, args.scores, args.ray_unit_rows or 0, json.dumps(model),
        json.dumps(settings, sort_keys=True), args.cog,
    )  # fmt: skip
    single = len(inputs) == 1
    records: dict[str, dict[str, Any]] = {}
    scenes: list[Scene] = []

    def fail(path: str, message: str) -> None:
        if single:
            raise UserError(message)
        records[path] = dict(records.get(path, {"input": path}), status="failed", error=message)
        write_line(f"aeroseg predict: skipped: {message}")

    for path in inputs:
        try:
            if path in clashes:
                raise UserError(clashes[path])
            scene = _plan(path, out_file, args, job, settings, records, locks)
        except (UserError, RasterioError, OSError) as error:
            fail(path, str(error) if isinstance(error, UserError) else f"{path}: {one_line(error)}")
            continue
        if scene is not None:
            scenes.append(scene)

    def on_scene(scene: Scene) -> None:
        if scene.failed:
            fail(scene.path, scene.failed)
            return
        try:
            counts, _ = assemble(scene, job)
        except (UserError, RasterioError, OSError) as error:
            fail(
                scene.path, str(error) if isinstance(error, UserError) else f"{scene.path}: {one_line(error)}"
            )
            return
        names = classes.ids_to_names
        pixels = {name: int(counts[i]) for i, name in enumerate(names)} | {"nodata": int(counts[255])}
        seconds = round(time.perf_counter() - scene.start, 3)
        records[scene.path].update(status="ok", seconds=seconds, pixels=pixels, units=len(scene.bands))
        if args.overwrite:  # an earlier run's scores or overlay would pass for this run's
            remove_side_files(scene.paths["classes"], scene.paths, scene.path)

    if any(len(s.done) < len(s.bands) for s in scenes):
        connect(args.ray)
    cluster = Cluster(args.ray, args.ray_workers, args.ray_threads, args.device)
    stats = run_units(scenes, job, model, cluster, quiet=args.quiet, on_scene=on_scene)
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
    from aeroseg.distributed.runner import Cluster, connect, run_units

    connect(address)
    job = Job(classes, read, options, precision, True, 0, "python object", cog=cog)
    threads = torch.get_num_threads()  # CPU workers compute as this process does: the same results
    cluster = Cluster(address, threads=threads, device="auto" if device is None else device.type)
    with tempfile.TemporaryDirectory(prefix="aeroseg-parts-") as parts, RasterSource(path, read) as source:
        scene = plan_scene(path, paths or {}, Path(parts) / "scene", source, _sized(job, source))
        run_units([scene], job, model, cluster, quiet=not progress, on_scene=lambda s: None)
        if scene.failed:
            raise UserError(scene.failed)
        _, arrays = assemble(scene, _sized(job, source), collect=True)
    assert arrays is not None
    return arrays.ids, arrays.confidence


def _plan(
    path: str,
    out_file: Path | None,
    args: argparse.Namespace,
    job: Job,
    settings: dict[str, Any],
    records: dict[str, dict[str, Any]],
    locks: contextlib.ExitStack,
) -> Scene | None:
    """The scene of one input, or None when its outputs exist with the same settings (a skipped record)."""
    with RasterSource(path, job.read) as source:
        class_path = out_file or Path(args.output) / f"{places.input_stem(path)}{places.class_suffix(source)}"
        item = isinstance(path, StacInput)  # the STAC Item of its outputs too
        paths = places.output_paths(class_path, scores=args.scores, overlay=args.overlay, item=item)
        places.refuse_overwriting_input(path, paths, args.vector)
        record: dict[str, Any] = {"input": path, "outputs": {k: str(v) for k, v in paths.items()}}
        records[path] = dict(record, height=source.height, width=source.width)
        if args.vector and source.map_crs is None and not args.vector_pixels:
            raise UserError(no_crs_message(path, "--vector-pixels"))
        places.make_parent(class_path)
        locks.enter_context(exclusive(class_path, what="aeroseg predict"))
        if finished(class_path, paths, settings, overwrite=args.overwrite):
            records[path]["status"] = "skipped"
            return None
        if source.no_contrast:
            write_line(f"aeroseg predict: warning: {source.no_contrast}")
        parts = class_path.parent / PARTS / places.input_stem(path)
        if args.overwrite:
            shutil.rmtree(parts, ignore_errors=True)
        return plan_scene(path, paths, parts, source, _sized(job, source))


def _sized(job: Job, source: RasterSource) -> Job:
    """``job`` with its unit rows set: about :data:`UNIT_PIXELS` a unit unless given."""
    if job.unit_rows:
        return job
    stride = max(1, int(job.options.window * (1 - job.options.overlap)))
    rows = max(1, round(UNIT_PIXELS / (max(source.width, 1) * stride)))
    return Job(**{**job.__dict__, "unit_rows": rows})


def _absolute(path: str | None) -> str | None:
    """A local path made absolute (workers may run elsewhere); hub ids, URLs and None as they are."""
    if path is None or is_url(path) or not os.path.exists(path):
        return path
    return os.path.abspath(path)
