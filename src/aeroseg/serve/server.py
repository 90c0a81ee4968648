"""The server of ``aeroseg serve`` built from its parsed arguments: the model (through the registry), the
catalog of rasters, the job runner, the security guard and the limits, in a work folder removed on exit."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aeroseg import registry
from aeroseg.cli import options
from aeroseg.device import resolve_device
from aeroseg.errors import CheckpointError, UserError
from aeroseg.precision import resolve
from aeroseg.prediction.streaming import WindowOptions
from aeroseg.raster import ReadOptions, expand_inputs, is_url, one_line
from aeroseg.serve.app import create_app
from aeroseg.serve.catalog import Catalog
from aeroseg.serve.files import FileAccess, ForbiddenPath
from aeroseg.serve.formats import gdal_sandbox
from aeroseg.serve.jobs import JobRunner
from aeroseg.serve.lifecycle import STOP_SECONDS, work_folder
from aeroseg.serve.limits import limits_from_args
from aeroseg.serve.security import Guard, Refused, server_token


@contextmanager
def served_app(args: argparse.Namespace) -> Iterator[tuple[Any, str]]:
    """The application of the parsed ``aeroseg serve`` arguments and the name of its model; its work
    folder (uploads, class rasters) is removed on exit."""
    inputs = expand_inputs(args.inputs) if args.inputs else []
    if any(is_url(p) for p in inputs):
        raise UserError("aeroseg serve opens local files only; download the image first")
    if args.root is not None and not Path(args.root).is_dir():
        raise UserError(f"--root {args.root} is not a folder")
    roots = [args.root] if args.root else list(dict.fromkeys(str(Path(p).resolve().parent) for p in inputs))
    if not roots:
        raise UserError("give images to open (aeroseg serve scene.tif) or --root DIR to choose from a folder")
    window_options = WindowOptions(window=args.window, overlap=args.overlap, batch_size=args.batch_size)
    read = ReadOptions(args.bands, None, args.percentiles, None)
    limits = limits_from_args(args)
    guard = Guard.for_address(args.host, server_token(), args.allowed_host)
    device = resolve_device(args.device)
    request = options.model_request(args, registry.DEFAULT_SEGMENTER)
    label = request.describe()
    own = request.preset if request.checkpoint is None else None  # the preset served
    allowed = registry.presets() if args.allow_presets else [own] if own else []
    default = registry.segmenter(request, device)

    def load(name: str) -> Any:
        if name in ("default", own):
            return default
        if name in registry.presets():
            if name not in allowed:
                raise Refused(f"this server runs {label} only; start it with --allow-presets to offer {name}")
            try:
                return registry.segmenter(registry.ModelRequest(preset=name), device)
            except (OSError, ValueError) as error:
                raise CheckpointError(
                    f"preset {name}: its weights cannot be loaded: {one_line(error)}"
                ) from None
        try:
            path = access.resolve(name, folder=True)
        except ForbiddenPath:
            raise
        except UserError:
            raise UserError(
                f"unknown model {name[:80]!r}: choose default, "
                + (f"a preset ({', '.join(allowed)}) " if allowed else "")
                + "or a checkpoint folder under the served folders"
            ) from None
        return registry.segmenter(registry.ModelRequest(checkpoint=str(path)), device)

    with gdal_sandbox(), work_folder() as work:
        access = FileAccess(roots, work / "uploads")
        catalog = Catalog(access, load, cache_bytes=int(args.cache_mb * 2**20), read=read, limits=limits)
        precision = resolve(args.precision, device)  # auto: bf16 where the device has it natively
        runner = JobRunner(work, window_options, device, precision, max_active=limits.queued_jobs)
        try:
            for path in inputs:
                catalog.open(str(Path(path).resolve()))
            yield (
                create_app(catalog, runner, guard=guard, limits=limits, model_label=label, presets=allowed),
                label,
            )
        finally:
            runner.close(wait=STOP_SECONDS)
            catalog.close()
