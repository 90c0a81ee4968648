"""What ``aeroseg predict`` segments: its INPUT arguments and a STAC API search, as the list of images.

Files, folders, glob patterns and URLs are expanded by :func:`aeroseg.raster.expand_inputs`; ``.json`` inputs
(STAC Items, ItemCollections, catalogs) and ``--stac-search`` by :func:`aeroseg.stac.iter_inputs`, which
yields :class:`aeroseg.stac.StacInput` strings that the single-process loop and the Ray units take as they
take paths.
"""

from __future__ import annotations

import argparse
import os

import rasterio
from rasterio.errors import RasterioError

from aeroseg.errors import UserError
from aeroseg.stac import StacOptions, iter_inputs


def add_stac(parser: argparse.ArgumentParser) -> None:
    """The options of STAC inputs and searches."""
    stac = parser.add_argument_group('STAC (pip install "aeroseg[geo]")')
    stac.add_argument("--stac-search", metavar="URL", help="search this STAC API and segment the Items found")
    stac.add_argument(
        "--collection", action="append", default=[], metavar="C", help="collection to search (repeatable)"
    )
    stac.add_argument("--bbox", type=_bbox, metavar="W,S,E,N", help="search area, WGS84 degrees")
    stac.add_argument(
        "--datetime", metavar="D", help="search time: an RFC 3339 instant or START/END interval"
    )
    stac.add_argument(
        "--max-items", type=int, default=100, metavar="N", help="segment at most N Items of the search"
    )
    stac.add_argument(
        "--asset", metavar="KEY", help="asset to segment (default: the role 'visual', else the role 'data')"
    )


def image_inputs(args: argparse.Namespace, names: tuple[str, ...] | None) -> list[str]:
    """The images of the INPUT arguments, then of the STAC search; ``names``: band names of ``--bands``."""
    if not args.inputs and args.stac_search is None:
        raise UserError(
            "nothing to segment: give INPUT files, folders, URLs or STAC files, or --stac-search URL"
        )
    options = StacOptions(
        asset=args.asset, bands=names, search=args.stac_search, collections=tuple(args.collection),
        bbox=args.bbox, datetime=args.datetime, max_items=args.max_items,
    )  # fmt: skip
    inputs = list(iter_inputs(args.inputs, options))
    if not inputs:
        raise UserError(f"the STAC search of {args.stac_search} found no Item; widen --bbox or --datetime")
    return inputs


def band_list(text: str) -> tuple[int, ...] | tuple[str, ...]:
    """``--bands``: band numbers (``3,2,1``) or, for STAC inputs, band names (``B04,B03,B02``)."""
    parts = [v.strip() for v in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated band numbers or names, got {text!r}")
    if all(p.lstrip("-").isdigit() for p in parts):
        return tuple(int(p) for p in parts)
    return tuple(parts)


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WEST,SOUTH,EAST,NORTH in degrees, got {text!r}") from None
    return west, south, east, north


def first_image(inputs: list[str]) -> tuple[str, int, int] | None:
    """Name, height and width of the first input when it is a local image file (for messages), else None."""
    if not inputs or not os.path.isfile(inputs[0]):
        return None
    try:
        with rasterio.open(inputs[0]) as dataset:
            return inputs[0], dataset.height, dataset.width
    except RasterioError:
        return None
