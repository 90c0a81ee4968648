"""``aeroseg prepare``: official downloads, or your own images and labels -> the canonical layout.

    aeroseg prepare {isaid,dlrsd,openearthmap} --raw DIR -o DIR
    aeroseg prepare labels --image A.tif [B.tif ...] --labels L.gpkg --field class [--classes a,b,c] -o DIR

Each benchmark's module (``isaid``, ``dlrsd``, ``openearthmap``) finds the raw files and decodes its labels;
:mod:`aeroseg.data.vector_labels` rasterises the polygons of your own labels on your images;
:mod:`aeroseg.data.writer` tiles and writes them. For iSAID and DLRSD, OVRS's processed release (the paper's
data, :mod:`aeroseg.data.ovrs`) is recognised too and copied whole. The train / val counts are printed beside
the paper's. An interrupted run, started again with the same
arguments, skips what is complete. docs/datasets.md describes the raw layouts and the processing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aeroseg.cli import options
from aeroseg.data import dlrsd, isaid, openearthmap, ovrs, vector_labels
from aeroseg.data.info import BUILTIN, DatasetInfo, builtin_split
from aeroseg.data.writer import SPLITS, Summary, Writer
from aeroseg.errors import DatasetNotFoundError

CONVERTERS = {"isaid": isaid, "dlrsd": dlrsd, "openearthmap": openearthmap}
HELP = {
    "isaid": "iSAID from the DOTA/iSAID downloads, or OVRS's processed release (the paper's)",
    "dlrsd": "DLRSD from the UC Merced and DLRSD downloads, or OVRS's processed release (the paper's)",
    "openearthmap": "OpenEarthMap from its release without xBD",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name in BUILTIN:
        raw = datasets.add_parser(
            name, help=HELP[name], description=HELP[name], formatter_class=options.HelpFormatter
        )
        raw.add_argument(
            "--raw",
            required=True,
            type=Path,
            metavar="DIR",
            help="folder of the official download (unzipped)",
        )
        _add_output(raw)
    own = datasets.add_parser(
        "labels",
        help="your GeoTIFFs and a vector file of labelled polygons",
        description="Rasterise the polygons of a vector file on the grid of each image and tile them into a "
        "dataset that aeroseg train and evaluate read (docs/datasets.md).",
        formatter_class=options.HelpFormatter,
    )
    own.add_argument(
        "--image", nargs="+", required=True, metavar="FILE", help="georeferenced images (GeoTIFFs)"
    )
    own.add_argument(
        "--labels",
        required=True,
        type=Path,
        metavar="FILE",
        help="polygons: .gpkg, .geojson, .shp, .parquet ...",
    )
    own.add_argument(
        "--field", required=True, metavar="NAME", help="the attribute that holds each polygon's class"
    )
    own.add_argument("--layer", metavar="NAME", help="the layer of a vector file with several")
    own.add_argument(
        "--classes", type=_names, metavar="A,B,C", help="classes in id order (default: every value, sorted)"
    )
    own.add_argument(
        "--unseen",
        type=_names,
        metavar="C",
        help="classes held out of training (open vocabulary)",
    )
    own.add_argument(
        "--background", metavar="NAME", help="class of the pixels no polygon covers (default: ignored)"
    )
    own.add_argument(
        "--all-touched", action="store_true", help="label every pixel a polygon touches, not only centres"
    )
    own.add_argument("--bands", type=_ints, metavar="R,G,B", help="1-based bands for R,G,B, or one for grey")
    own.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="bottom fraction of each image's rows for val",
    )
    own.add_argument(
        "--val-image",
        nargs="+",
        metavar="FILE",
        help="images (among --image) that form the val split",
    )
    own.add_argument("--tile", type=int, default=512, metavar="PX", help="tile side in pixels")
    own.add_argument("--name", metavar="NAME", help="dataset name (default: the labels file's name)")
    _add_output(own)


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        "--out",  # the old spelling, not shown (options.HIDDEN_SPELLINGS)
        dest="out",
        type=Path,
        metavar="DIR",
        required=True,
        help="output folder (canonical layout)",
    )
    parser.add_argument(
        "--keep-empty",
        action="store_true",
        help="keep tiles whose mask is all ignore (dropped by default: they hold no scored pixel)",
    )
    options.add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    if args.dataset == "labels":
        return _own_labels(args)
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
        _report(info, args.out, summary, "raw images")
    return 0


def _own_labels(args: argparse.Namespace) -> int:
    """``aeroseg prepare labels``: see :mod:`aeroseg.data.vector_labels`."""
    settings = vector_labels.LabelOptions(
        field=args.field, classes=args.classes, unseen=tuple(args.unseen or ()), background=args.background,
        all_touched=args.all_touched, layer=args.layer, bands=args.bands, val_images=tuple(args.val_image or ()),
        val_fraction=args.val_fraction, tile=args.tile,
    )  # fmt: skip
    labels = vector_labels.read_labels(args.labels, args.field, args.layer)
    classes = vector_labels.class_names(labels, settings)
    info = DatasetInfo(args.name or labels.path.stem, classes, list(settings.unseen))
    sources, skipped = vector_labels.plan_sources(args.image, labels, info, settings)
    recorded = {  # a rerun with other labels or options is refused, not mixed with these tiles
        "labels": str(labels.path.resolve()), "images": " ".join(str(Path(p).resolve()) for p in args.image),
        "settings": repr(settings),
    }  # fmt: skip
    hint = "the polygons cover no pixel of it (try --all-touched)"
    writer = Writer(
        Path(args.out), info, vector_labels.tiling(settings), keep_empty=args.keep_empty, options=recorded,
        hint=hint,
    )  # fmt: skip
    summary = writer.run(sources, quiet=args.quiet)
    if not args.quiet:
        if skipped:
            print(
                f"note: {skipped} features of {labels.path} have no value or one outside the classes; skipped"
            )
        print(
            f"classes: {', '.join(classes)}" + (f"; unseen: {', '.join(info.unseen)}" if info.unseen else "")
        )
        _report(info, args.out, summary, "image parts")
    return 0


def _report(info: DatasetInfo, out: Path, summary: Summary, sources: str) -> None:
    counts = ", ".join(f"{summary.tiles(split)} {split}" for split in SPLITS)
    print(
        f"prepared {info.name} in {out}: {counts} images "
        f"({sum(summary.written.values())} written now, {sum(summary.present.values())} already there; "
        f"{sum(summary.empty.values())} all-ignore tiles dropped; "
        f"{summary.skipped_sources} {sources} already done)"
    )


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated class names, got {text!r}")
    return names


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated band numbers, got {text!r}") from None
