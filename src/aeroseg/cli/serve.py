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

from aeroseg import registry
from aeroseg.cli import options
from aeroseg.errors import UserError
from aeroseg.precision import AUTO_HELP, CHOICES
from aeroseg.serve.lifecycle import STOP_SECONDS, Stopped, exit_soon, stop_on_signals
from aeroseg.serve.limits import add_limit_arguments
from aeroseg.serve.security import (
    ScrubToken,
    add_security_arguments,
    exposure_warning,
)

DEFAULT_PORT = 8000
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
    options.add_device(parser)
    parser.add_argument("--precision", choices=CHOICES, default="fp32", help=AUTO_HELP)
    parser.add_argument("--quiet", action="store_true", help="no request log")


def run(args: argparse.Namespace) -> int:
    with stop_on_signals():  # SIGINT and SIGTERM: the finally clauses run, the work folder goes
        try:
            try:
                import uvicorn

                from aeroseg.serve.server import served_app  # the serve extra loads only when it runs
            except ImportError as error:
                raise UserError(
                    f'aeroseg serve needs the {error.name} package: pip install "aeroseg[serve]"'
                ) from None
            with served_app(args) as (app, label):
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
