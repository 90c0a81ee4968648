"""``aeroseg prepare {isaid,dlrsd,openearthmap} --raw DIR --out DIR``: official downloads -> canonical layout.

Each dataset's module (``isaid``, ``dlrsd``, ``openearthmap``) finds the raw files and decodes its labels;
:mod:`aeroseg.data.writer` tiles and writes them. For iSAID and DLRSD, OVRS's processed release (the paper's
data, :mod:`aeroseg.data.ovrs`) is recognised too and copied whole. The train / val counts are printed beside
the paper's. An interrupted run, started again with the same
arguments, skips what is complete. docs/datasets.md describes the raw layouts and the processing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aeroseg.cli import options
from aeroseg.data import dlrsd, isaid, openearthmap, ovrs
from aeroseg.data.info import BUILTIN, builtin_split
from aeroseg.data.writer import SPLITS, Writer
from aeroseg.errors import DatasetNotFoundError, UserError

CONVERTERS = {"isaid": isaid, "dlrsd": dlrsd, "openearthmap": openearthmap}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=BUILTIN, help="which benchmark the raw download is")
    parser.add_argument(
        "--raw", required=True, type=Path, metavar="DIR", help="folder of the official download (unzipped)"
    )
    parser.add_argument(
        "-o",
        "--output",
        dest="out",
        type=Path,
        metavar="DIR",
        help="output folder (canonical layout); required",
    )
    options.add_alias(parser, "--out", dest="out", type=Path)
    parser.add_argument(
        "--keep-empty",
        action="store_true",
        help="keep tiles whose mask is all ignore (dropped by default: they hold no scored pixel)",
    )
    options.add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        raise UserError("give the output folder with -o DIR")
    converter = CONVERTERS[args.dataset]
    info, codes = builtin_split(args.dataset)
    raw = Path(args.raw)
    if not raw.is_dir():
        raise DatasetNotFoundError(f"--raw folder {raw} does not exist; {converter.LAYOUT}")
    processed = ovrs.find_root(raw, args.dataset)
    if processed is not None:  # OVRS's processed release, the paper's data: copied whole, no tiling
        sources, notes = (
            ovrs.find_sources(processed, args.dataset, info),
            [f"OVRS's processed layout in {processed}"],
        )
        writer = Writer(Path(args.out), info, None, keep_empty=True)
    else:
        sources, notes = converter.find_sources(raw, info, codes)
        writer = Writer(Path(args.out), info, converter.TILING, keep_empty=args.keep_empty)
    summary = writer.run(sources, quiet=args.quiet)
    if not args.quiet:
        for note in notes:
            print(f"note: {note}")
        print(ovrs.count_report(args.dataset, {split: summary.tiles(split) for split in SPLITS}))
        counts = ", ".join(f"{summary.tiles(split)} {split}" for split in SPLITS)
        print(
            f"prepared {info.name} in {args.out}: {counts} images "
            f"({sum(summary.written.values())} written now, {sum(summary.present.values())} already there; "
            f"{sum(summary.empty.values())} all-ignore tiles dropped; "
            f"{summary.skipped_sources} raw images already done)"
        )
    return 0
