"""``aeroseg serve``: a map in the browser to segment GeoTIFFs with any class list.

    aeroseg serve scene.tif                      # training-free model, http://127.0.0.1:8000/?token=...
    aeroseg serve data/ --checkpoint runs/isaid/final --port 8080

Needs the ``serve`` extra: ``pip install "aeroseg[serve]"``. What the server refuses and how to expose it:
docs/serve.md, "Security".
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aeroseg.errors import CheckpointError, UserError
from aeroseg.predict.io import ReadOptions, expand_inputs, is_url, one_line
from aeroseg.predict.streaming import PRECISIONS, WindowOptions
from aeroseg.presets import presets
from aeroseg.serve.lifecycle import STOP_SECONDS, Stopped, exit_soon, stop_on_signals, work_folder
from aeroseg.serve.limits import add_limit_arguments, limits_from_args
from aeroseg.serve.security import (
    Guard,
    Refused,
    ScrubToken,
    add_security_arguments,
    exposure_warning,
    server_token,
)

DEFAULT_PORT = 8000
DEFAULT_CACHE_MB = 2048


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="PATH", help="images or folders to open (default: none)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", metavar="DIR|FILE", help="model written by aeroseg train")
    model.add_argument(
        "--preset", metavar="NAME", help="a preset on its public weights (default: training-free)"
    )
    parser.add_argument("--clip", metavar="ID|DIR|FILE", help="CLIP weights of the training-free model")
    parser.add_argument(
        "--guidance", metavar="ID|DIR|FILE|none", help="SAM weights of the training-free model"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)"
    )
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="the only folder whose files the page may open (default: the PATHs' folders)",
    )
    add_security_arguments(parser)
    add_limit_arguments(parser)
    parser.add_argument(
        "--cache-mb", type=float, default=DEFAULT_CACHE_MB,
        help=f"memory for cached image features (default {DEFAULT_CACHE_MB})",
    )  # fmt: skip
    parser.add_argument("--bands", type=_ints, help="1-based bands for R,G,B (as in aeroseg predict)")
    parser.add_argument("--percentiles", type=_pair, metavar="LOW,HIGH", help="per-band scaling percentiles")
    parser.add_argument("--window", type=int, default=512, help="window side in pixels (default 512)")
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap fraction (default 0.25)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help="autocast precision")
    parser.add_argument("--quiet", action="store_true", help="no request log")


def run(args: argparse.Namespace) -> int:
    with stop_on_signals():  # SIGINT and SIGTERM: the finally clauses run, the work folder goes
        try:
            with served_app(args) as (app, label):
                import uvicorn

                config = uvicorn.Config(
                    app, log_level="warning" if args.quiet else "info", access_log=not args.quiet,
                    timeout_graceful_shutdown=STOP_SECONDS,
                )  # fmt: skip
                access = logging.getLogger("uvicorn.access")
                if not any(isinstance(f, ScrubToken) for f in access.filters):
                    access.addFilter(ScrubToken())
                sock = _listen(args.host, args.port)  # listening before the URL is printed (--port 0: any)
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                if (warning := exposure_warning(args.host)) is not None:
                    print(warning, file=sys.stderr, flush=True)
                url = f"http://{shown}:{port}/?token={app.state.guard.token}"
                print(f"aeroseg serve: {label} on {url} (Ctrl+C stops)", flush=True)
                uvicorn.Server(config).run(sockets=[sock])
            code = 0
        except Stopped as stop:
            print(f"aeroseg serve: {stop}", file=sys.stderr, flush=True)
            code = stop.exit_code
    exit_soon(code)  # a thread still busy (a model download) does not keep the process alive
    return code


@contextmanager
def served_app(args: argparse.Namespace) -> Iterator[tuple[Any, str]]:
    """The application of the parsed ``aeroseg serve`` arguments and the name of its model; its work
    folder (uploads, class rasters) is removed on exit."""
    try:
        import uvicorn  # noqa: F401

        from aeroseg.serve.app import create_app
    except ImportError as error:
        raise UserError(
            f'aeroseg serve needs the {error.name} package: pip install "aeroseg[serve]"'
        ) from None
    from aeroseg.predict import api
    from aeroseg.serve.catalog import Catalog
    from aeroseg.serve.files import FileAccess, ForbiddenPath
    from aeroseg.serve.formats import gdal_sandbox
    from aeroseg.serve.jobs import JobRunner

    inputs = expand_inputs(args.inputs) if args.inputs else []
    if any(is_url(p) for p in inputs):
        raise UserError("aeroseg serve opens local files only; download the image first")
    if args.root is not None and not Path(args.root).is_dir():
        raise UserError(f"--root {args.root} is not a folder")
    roots = [args.root] if args.root else list(dict.fromkeys(str(Path(p).resolve().parent) for p in inputs))
    if not roots:
        raise UserError("give images to open (aeroseg serve scene.tif) or --root DIR to choose from a folder")
    options = WindowOptions(window=args.window, overlap=args.overlap, batch_size=args.batch_size)
    read = ReadOptions(args.bands, None, args.percentiles, None)
    limits = limits_from_args(args)
    guard = Guard.for_address(args.host, server_token(), args.allowed_host)
    device = api.resolve_device(args.device)
    label = args.checkpoint or args.preset or "training-free"
    own = args.preset or ("training-free" if args.checkpoint is None else None)  # the preset served
    allowed = presets() if args.allow_presets else [own] if own else []
    default = load_model(args.checkpoint, args.preset, device, clip=args.clip, guidance=args.guidance)

    def load(name: str) -> Any:
        if name in ("default", own):
            return default
        if name in presets():
            if name not in allowed:
                raise Refused(f"this server runs {label} only; start it with --allow-presets to offer {name}")
            return load_model(None, name, device)
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
        return load_model(str(path), None, device)

    with gdal_sandbox(), work_folder() as work:
        access = FileAccess(roots, work / "uploads")
        catalog = Catalog(access, load, cache_bytes=int(args.cache_mb * 2**20), read=read, limits=limits)
        runner = JobRunner(work, options, device, args.precision, max_active=limits.queued_jobs)
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


def load_model(checkpoint: str | None, preset: str | None, device: Any, **weights: str | None) -> Any:
    """The model of ``--checkpoint`` (a directory, or a file in it), of ``--preset`` on its public weights,
    or the training-free model; :class:`UserError` with one line when it cannot be loaded."""
    from aeroseg.predict import api

    weights = {k: v for k, v in weights.items() if v is not None}
    if checkpoint is not None:
        path = Path(checkpoint)
        if path.is_file():
            path = path.parent  # config.json or model.safetensors of a checkpoint folder
        if not path.exists():
            raise CheckpointError(f"checkpoint {checkpoint} does not exist")
        return api.load_segmenter(str(path), device)
    if preset is None or preset == "training-free":
        return api.load_segmenter(None, device, **weights)
    if weights:
        raise UserError("--clip and --guidance choose the weights of the training-free model only")
    import aeroseg

    try:
        return aeroseg.build(preset).to(device).eval()
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"preset {preset}: its public weights cannot be loaded: {one_line(error)}"
        ) from None


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's backlog: a client that reads the printed URL connects at once
    except OSError as error:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}: {error.strerror}; choose another --host or --port"
        ) from None
    return sock


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    return low, high
