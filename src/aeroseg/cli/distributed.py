"""The options of ``aeroseg predict --ray`` (see :mod:`aeroseg.distributed` and docs/distributed.md)."""

from __future__ import annotations

import argparse

from aeroseg.errors import UserError

RAY_THREADS = 4  # default CPUs and torch threads of a CPU worker (--ray-threads)


def add_ray(parser: argparse.ArgumentParser) -> None:
    ray = parser.add_argument_group('ray (pip install "aeroseg[ray]"; see docs/distributed.md)')
    ray.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="auto|local|ADDRESS",
        help="run on a Ray cluster: auto (a running one, else local; the default), local, or its address",
    )
    ray.add_argument("--ray-workers", type=int, help="workers (default: one per GPU, else CPUs / threads)")
    ray.add_argument("--ray-threads", type=int, default=RAY_THREADS, help="CPUs and threads of a CPU worker")
    ray.add_argument(
        "--ray-unit-rows",
        type=int,
        help="window rows per unit of a large scene (default: ~32 Mpx a unit, at least 16 rows)",
    )
    ray.add_argument(
        "--verbose",
        action="store_true",
        help="also print Ray's own messages (start-up lines, warnings, worker output, raylet lines)",
    )
    ray.add_argument(
        "--ray-single-file",
        action="store_true",
        help="write a scene of several units as one <stem>.tif (a worker copies its parts into it) instead "
        "of <stem>.vrt over the parts in <stem>.parts/",
    )


def check_ray(args: argparse.Namespace) -> None:
    """Refuse the options of a Ray run without ``--ray`` (they would be ignored without a word)."""
    if args.ray is not None:
        return
    given = [
        f"--{k.replace('_', '-')}"
        for k in ("ray_unit_rows", "ray_workers", "ray_single_file", "verbose")
        if getattr(args, k)
    ]
    if args.ray_threads != RAY_THREADS:
        given.append("--ray-threads")
    if given:
        raise UserError(f"{', '.join(given)} only apply to a Ray run; add --ray (see docs/distributed.md)")
