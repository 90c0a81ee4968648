"""What one request to ``aeroseg serve`` may cost: pixels, bytes, open files and queued work, each with the
flag that sets it. A request over a limit is answered with one line (HTTP 413, or 429 for a full queue)
before anything is read; a map tile that would read more pixels than its limit is served empty.

A tile at zoom ``z`` of a raster whose full resolution is at zoom ``native`` covers ``256 · 2^(native-z)``
raster pixels a side; GDAL reads them from the coarsest overview that is still at least as fine as the
tile (a file without overviews: at full resolution). :func:`tile_pixels` counts them, so a zoom far below
a 40,000² GeoTIFF without overviews costs nothing instead of gigabytes, and :func:`lowest_zoom` is where
the page's map stops zooming out.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from aeroseg.errors import UserError

TILE = 256
MEGA = 1_000_000


class TooLarge(UserError):
    """A request over a size limit (HTTP 413)."""


class Busy(UserError):
    """The server's queue is full (HTTP 429)."""


@dataclass(frozen=True)
class Limits:
    """The limits of one server (the flag of each in parentheses)."""

    upload_bytes: int = 512 * 2**20  # one upload (--max-upload-mb)
    upload_total_bytes: int = 2048 * 2**20  # all uploads kept, oldest deleted (--max-upload-total-mb)
    upload_pixels: int = 100 * MEGA  # width × height of one upload, e.g. 10,000² (--max-upload-megapixels)
    open_images: int = 32  # images held open; least recently used closed, uploads deleted (--max-open-images)
    tile_pixels: int = 8 * MEGA  # pixels read for one 256² map tile, and in one block (--max-tile-megapixels)
    job_pixels: int = 100 * MEGA  # pixels of one segmentation, e.g. a 10,000² view (--max-job-megapixels)
    queued_jobs: int = 8  # segmentations waiting or running at once (--max-queued-jobs)
    json_bytes: int = 64 * 2**10  # body of one JSON request (a class list and a view; no flag)

    def __post_init__(self) -> None:
        counts = (self.upload_bytes, self.upload_pixels, self.job_pixels, self.open_images, self.queued_jobs)
        if min(counts) < 1:
            raise UserError("every --max-... limit must be positive")
        if self.upload_total_bytes < self.upload_bytes:
            raise UserError("--max-upload-total-mb must be at least --max-upload-mb")
        if self.tile_pixels < TILE * TILE:
            raise UserError(f"--max-tile-megapixels must be at least {TILE * TILE / MEGA:g} (one 256² tile)")

    def check_job(self, width: int, height: int) -> None:
        """:class:`TooLarge` for a segmentation of more than :attr:`job_pixels`."""
        if width * height > self.job_pixels:
            raise TooLarge(
                f"segmenting {width}×{height} pixels ({_mp(width * height)}) is over this server's limit of "
                f"{_mp(self.job_pixels)} per run (--max-job-megapixels); segment a smaller view"
            )

    def check_upload(self, width: int, height: int, label: str) -> None:
        """:class:`TooLarge` for an uploaded image of more than :attr:`upload_pixels`."""
        if width * height > self.upload_pixels:
            raise TooLarge(
                f"upload {label} has {width}×{height} pixels ({_mp(width * height)}), over the limit of "
                f"{_mp(self.upload_pixels)} (--max-upload-megapixels); put it under --root instead"
            )

    def check_blocks(self, width: int, height: int, label: str) -> None:
        """:class:`TooLarge` for a raster whose blocks (GeoTIFF tiles or strips, which GDAL decodes whole)
        hold more than :attr:`tile_pixels`: any read of it would decode that many pixels."""
        if width * height > self.tile_pixels:
            raise TooLarge(
                f"{label} is stored in blocks of {width}×{height} pixels, over this server's limit of "
                f"{_mp(self.tile_pixels)} per read (--max-tile-megapixels); re-tile it "
                "(gdal_translate -co TILED=YES)"
            )


def tile_pixels(z: int, *, native_zoom: int, width: int, height: int, overviews: Sequence[int]) -> int:
    """Raster pixels read for one tile at zoom ``z`` of a width×height raster at full resolution at zoom
    ``native_zoom`` with the given overview factors (2, 4, ...)."""
    ratio = 2.0 ** (native_zoom - z)  # raster pixels per tile pixel
    factor = max([1, *(f for f in overviews if f <= ratio)])
    side = TILE * ratio
    return int(min(side, width) / factor * (min(side, height) / factor))


def lowest_zoom(
    limit: int, *, floor: int, native_zoom: int, width: int, height: int, overviews: Sequence[int]
) -> int:
    """The lowest zoom, not below ``floor``, whose tiles read at most ``limit`` pixels (at ``native_zoom``
    a tile reads at most 256², so the answer is never above it)."""
    z = native_zoom
    while z > floor and tile_pixels(z - 1, native_zoom=native_zoom, width=width, height=height,
                                    overviews=overviews) <= limit:  # fmt: skip
        z -= 1
    return z


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of :class:`Limits` (their defaults are the dataclass's)."""
    d = Limits()
    for flag, default, unit, what in [
        ("--max-upload-mb", d.upload_bytes / 2**20, "MiB", "one upload"),
        ("--max-upload-total-mb", d.upload_total_bytes / 2**20, "MiB", "all uploads kept (oldest deleted)"),
        ("--max-upload-megapixels", d.upload_pixels / MEGA, "Mpx", "pixels of one upload"),
        ("--max-tile-megapixels", d.tile_pixels / MEGA, "Mpx", "pixels read for one map tile"),
        ("--max-job-megapixels", d.job_pixels / MEGA, "Mpx", "pixels of one segmentation"),
    ]:
        parser.add_argument(flag, type=float, default=default, help=f"{what} (default {default:g} {unit})")
    parser.add_argument(
        "--max-open-images", type=int, default=d.open_images,
        help=f"images held open; the least recently used is closed (default {d.open_images})",
    )  # fmt: skip
    parser.add_argument(
        "--max-queued-jobs", type=int, default=d.queued_jobs,
        help=f"segmentations waiting or running (default {d.queued_jobs})",
    )  # fmt: skip


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(
        upload_bytes=int(args.max_upload_mb * 2**20),
        upload_total_bytes=int(args.max_upload_total_mb * 2**20),
        upload_pixels=int(args.max_upload_megapixels * MEGA),
        open_images=args.max_open_images,
        tile_pixels=int(args.max_tile_megapixels * MEGA),
        job_pixels=int(args.max_job_megapixels * MEGA),
        queued_jobs=args.max_queued_jobs,
    )


def _mp(pixels: int) -> str:
    return f"{pixels / MEGA:.4g} megapixels"
