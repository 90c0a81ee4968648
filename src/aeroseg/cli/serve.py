"""``aeroseg serve``: a map in the browser to segment GeoTIFFs with any class list.

    aeroseg serve scene.tif                      # training-free model, http://127.0.0.1:8000
    aeroseg serve data/ --checkpoint runs/isaid/final --port 8080

Needs the ``serve`` extra: ``pip install "aeroseg[serve]"``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aeroseg import registry
from aeroseg.cli import options
from aeroseg.device import resolve_device
from aeroseg.errors import UserError
from aeroseg.precision import PRECISIONS
from aeroseg.prediction.streaming import WindowOptions
from aeroseg.raster import ReadOptions, expand_inputs, is_url

DEFAULT_PORT = 8000
DEFAULT_UPLOAD_MB = 512
DEFAULT_CACHE_MB = 2048


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="PATH", help="images or folders to open (default: none)")
    options.add_model(parser.add_argument_group("model"), default_preset=registry.DEFAULT_SEGMENTER)
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
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_UPLOAD_MB,
        help=f"upload limit (default {DEFAULT_UPLOAD_MB})",
    )
    parser.add_argument(
        "--cache-mb", type=float, default=DEFAULT_CACHE_MB,
        help=f"memory for cached image features (default {DEFAULT_CACHE_MB})",
    )  # fmt: skip
    parser.add_argument("--bands", type=_ints, help="1-based bands for R,G,B (as in aeroseg predict)")
    parser.add_argument("--percentiles", type=_pair, metavar="LOW,HIGH", help="per-band scaling percentiles")
    parser.add_argument("--window", type=int, default=512, help="window side in pixels (default 512)")
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap fraction (default 0.25)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    options.add_device(parser)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="autocast precision")
    parser.add_argument("--quiet", action="store_true", help="no request log")


def run(args: argparse.Namespace) -> int:
    with served_app(args) as (app, label):
        import uvicorn

        config = uvicorn.Config(app, log_level="warning" if args.quiet else "info", access_log=not args.quiet)
        sock = _listen(args.host, args.port)  # bound before the URL is printed (--port 0: any free port)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"aeroseg serve: {label} on http://{shown}:{port}/ (Ctrl+C stops)", flush=True)
        uvicorn.Server(config).run(sockets=[sock])
    return 0


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
    from aeroseg.serve.catalog import Catalog
    from aeroseg.serve.files import FileAccess, ForbiddenPath
    from aeroseg.serve.jobs import JobRunner

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
    device = resolve_device(args.device)
    request = options.model_request(args, registry.DEFAULT_SEGMENTER)
    label = request.describe()
    default = registry.segmenter(request, device)
    work = Path(tempfile.mkdtemp(prefix="aeroseg-serve-"))
    (work / "uploads").mkdir()
    access = FileAccess(roots, work / "uploads")

    def load(name: str) -> Any:
        if name == "default":
            return default
        if name in registry.presets():
            return registry.segmenter(registry.ModelRequest(preset=name), device)
        try:
            path = access.resolve(name, folder=True)
        except ForbiddenPath:
            raise
        except UserError:
            raise UserError(
                f"unknown model {name!r}: choose default, a preset ({', '.join(registry.presets())}) "
                "or a checkpoint folder under the served folders"
            ) from None
        return registry.segmenter(registry.ModelRequest(checkpoint=str(path)), device)

    catalog = Catalog(access, load, cache_bytes=int(args.cache_mb * 2**20), read=read)
    runner = JobRunner(work, window_options, device, args.precision)
    try:
        for path in inputs:
            catalog.open(str(Path(path).resolve()))
        yield (
            create_app(catalog, runner, max_upload_bytes=int(args.max_upload_mb * 2**20), model_label=label),
            label,
        )
    finally:
        runner.close()
        catalog.close()
        shutil.rmtree(work, ignore_errors=True)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
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
