"""``aeroseg predict``: segment images and GeoTIFFs of any size with a trained model, or without one.

    aeroseg predict INPUT... --checkpoint CKPT --classes "building,road,tree|forest,water" -o OUT
    aeroseg predict INPUT... --classes "building,road,tree|forest,water" -o OUT    # training-free model
    aeroseg predict item.json --stac-search URL --collection C --bbox W,S,E,N --classes ... -o OUT   # STAC

Without ``--checkpoint`` the training-free model (:mod:`aeroseg.training_free`) runs on the public CLIP
ViT-B/16 and SAM ViT-B weights, downloaded into the Hugging Face cache on first use; ``--clip`` and
``--guidance`` choose other weights (hub id, directory or original file; ``--guidance none``: no SAM).

For every input, OUT/<stem>.tif (a GeoTIFF input or any other raster) or OUT/<stem>.png (a plain PNG or
JPEG) holds the class ids, a Cloud-Optimized GeoTIFF unless ``--no-cog``; see
:mod:`aeroseg.prediction.classes` for the id scheme and :mod:`aeroseg.prediction.outputs` for the files.
STAC Items, ItemCollections, catalogs (``.json`` inputs) and STAC API searches are read by
:mod:`aeroseg.stac` (options: :mod:`aeroseg.cli.inputs`): their outputs are named after the Item ids, with
``<stem>.json``, the STAC Item of the outputs, beside them. With a single input, ``-o FILE.tif`` (or .png)
writes exactly that file. Every class raster records the settings that made it (classes, model, reading and window
options); inputs whose outputs all exist with the same settings are skipped, outputs made with other
settings are refused unless ``--overwrite`` redoes them. Folders of ``-o``, ``--vector`` and ``--json``
are created (or refused) before any work. An input that cannot be read is reported and skipped; the run
then ends with status 1. When there is a single input, any problem is an error (status 2) and nothing is
written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from rasterio.errors import RasterioError

from aeroseg import registry
from aeroseg.atomic import atomic, exclusive, remove_stale
from aeroseg.cli import options, output_names
from aeroseg.cli.distributed import add_ray, check_ray
from aeroseg.cli.inputs import add_stac, band_list, first_image, image_inputs
from aeroseg.device import resolve_device
from aeroseg.distributed.driver import POLYGONS, records_on_ray
from aeroseg.errors import UserError
from aeroseg.precision import AUTO_HELP, CHOICES, resolve
from aeroseg.prediction import api, checks
from aeroseg.prediction import paths as places
from aeroseg.prediction.classes import ClassList, parse_classes
from aeroseg.prediction.settings import finished, prediction_settings, remove_side_files
from aeroseg.prediction.streaming import WindowOptions, count_windows
from aeroseg.prediction.vector import VectorWriter
from aeroseg.progress import progress, write_line
from aeroseg.raster import RasterSource, ReadOptions, one_line
from aeroseg.stac import StacInput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "For every input, OUT/<stem>.tif (OUT/<stem>.png for a plain PNG or JPEG) holds uint8 class ids: the "
        "classes in the order given from 0, or from 1 with id 0 = background when --background-threshold is "
        "set; 255 = nodata. The names are in the file's metadata. With a single input, -o FILE.tif (or .png) "
        "writes exactly that file. Inputs whose outputs exist and were made with the same classes, model and "
        "options are skipped; outputs made otherwise are refused unless --overwrite."
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="image files, folders, glob patterns, URLs or .txt manifests (one a line); STAC Item / ItemCollection / "
        "catalog .json files or URLs",
    )
    model_flags = parser.add_argument_group("model (default: the training-free model on public weights)")
    options.add_model(model_flags, default_preset=registry.DEFAULT_SEGMENTER)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--classes", help='comma-separated class names; "tree|forest" gives synonyms')
    group.add_argument(
        "--classes-file", help="text file (one class a line) or YAML list / mapping to synonyms"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output folder (created when missing; end a name with a dot in /); with a single input also a "
        ".tif/.png file",
    )
    parser.add_argument(
        "--background-threshold",
        type=float,
        metavar="T",
        help="pixels whose best score is below T get id 0 'background'; classes then start at 1",
    )
    image = parser.add_argument_group("image")
    image.add_argument(
        "--bands",
        type=band_list,
        help="1-based bands for R,G,B (e.g. 3,2,1) or one band for grey; for STAC inputs also eo:bands names "
        "(e.g. B04,B03,B02 or red,green,blue)",
    )
    image.add_argument(
        "--scale", type=_pair, metavar="MIN,MAX", help="value range mapped to [0, 1] (all bands)"
    )
    image.add_argument(
        "--percentiles",
        type=_pair,
        metavar="LOW,HIGH",
        help="per-band percentiles mapped to [0, 1] (default: uint8 /255; floats in [0, 1] as they are, "
        "in [0, 255] /255; anything else 2,98)",
    )
    image.add_argument("--nodata", type=float, help="nodata value, overriding the file's")
    model = parser.add_argument_group("inference")
    model.add_argument(
        "--window", type=int, help="window side in pixels (default: the model's, 512 for every preset so far)"
    )
    model.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        help=f"window overlap, a fraction in [0, {checks.MAX_OVERLAP}]",
    )
    model.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    options.add_device(model)
    model.add_argument("--precision", choices=CHOICES, default="fp32", help=AUTO_HELP)
    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--scores", action="store_true", help="also write <stem>_scores: the best class probability"
    )
    out.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png with a legend")
    out.add_argument(
        "--vector", metavar="FILE", help="polygons of all images into FILE.gpkg, FILE.geojson or FILE.parquet"
    )
    out.add_argument(
        "--no-cog",
        dest="cog",
        action="store_false",
        help="write tiled GeoTIFFs without overviews instead of Cloud-Optimized GeoTIFFs (no final copy)",
    )
    out.add_argument(
        "--vector-pixels",
        action="store_true",
        help="allow polygons of images without a CRS, in pixel coordinates (column, row; said in the file)",
    )
    out.add_argument(
        "--min-area", type=float, default=0.0, help="drop polygons smaller than this (CRS units²)"
    )
    out.add_argument(
        "--simplify", type=float, default=0.0, help="polygon simplification tolerance (CRS units)"
    )
    out.add_argument(
        "--overwrite",
        action="store_true",
        help="redo inputs whose outputs exist, whatever made them (their earlier scores, overlay and STAC Item "
        "that this run does not write are removed)",
    )
    out.add_argument("--json", metavar="FILE", help="write a JSON summary of the run")
    options.add_quiet(out)
    add_stac(parser)
    add_ray(parser)


def run(args: argparse.Namespace) -> int:
    check_ray(args)
    classes = parse_classes(args.classes, args.classes_file, args.background_threshold)
    request = options.model_request(args, registry.DEFAULT_SEGMENTER)
    args.window = args.window or registry.window(request)
    checks.check_overlap(args.overlap, args.window, first_image(args.inputs))
    if args.precision == "auto":  # the precision used is what the outputs record (with --ray: this machine's)
        args.precision = resolve("auto", resolve_device(args.device))
    if args.min_area < 0 or args.simplify < 0:
        raise UserError(
            f"--min-area and --simplify must be >= 0, got {args.min_area:g} and {args.simplify:g}"
        )
    window_options = WindowOptions(window=args.window, overlap=args.overlap, batch_size=args.batch_size)
    names = args.bands if args.bands and isinstance(args.bands[0], str) else None
    read = ReadOptions(None if names else args.bands, args.scale, args.percentiles, args.nodata)
    inputs = image_inputs(args, names)
    single = len(inputs) == 1
    out_file = output_names.output_file(args.output, len(inputs))
    output_names.check_folders(args, out_file)  # before any work: a folder that cannot be made is refused
    folder = Path(args.output) if out_file is None else out_file.parent
    if folder.is_dir():
        remove_stale(folder)  # the temporary files of killed runs
    vector = None
    if args.vector:
        checks.check_vector_options(args.vector, min_area=args.min_area, simplify=args.simplify)
        vector = VectorWriter(
            args.vector, min_area=args.min_area, simplify=args.simplify, pixel_coordinates=args.vector_pixels
        )
    clashes = {} if out_file else output_names.stem_clashes(inputs)
    settings = prediction_settings(args, classes, request)
    if args.asset is not None:  # another asset of the same Items gives other pixels
        settings["asset"] = args.asset
    if args.ray is not None:
        records = records_on_ray(
            args, inputs, classes, read, window_options, out_file, settings, clashes, request
        )
    else:
        records = _predict_all(
            args, inputs, classes, read, window_options, out_file, settings, clashes, request
        )
    polygons = _write_vector(vector, records, single) if vector is not None else None
    failed = [r for r in records if r["status"] == "failed"]
    no_polygons = [r for r in records if "vector_error" in r]
    summary = {
        "classes": classes.ids_to_names,
        "synonyms": dict(zip(classes.names, classes.synonyms, strict=True)),
        "nodata_id": 255,
        "settings": settings,
        "ok": sum(r["status"] == "ok" for r in records),
        "skipped": sum(r["status"] == "skipped" for r in records),
        "failed": len(failed),
        "vector_failed": len(no_polygons),
        "vector": args.vector,
        "polygons": polygons,
        "images": records,
    }
    if args.json:
        places.make_parent(Path(args.json))
        with atomic(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    if not args.quiet or failed or no_polygons:
        line = (
            f"{summary['ok']} segmented, {summary['skipped']} skipped (outputs exist), {len(failed)} failed"
        )
        if no_polygons:
            line += f", {len(no_polygons)} without polygons"
        print(
            f"aeroseg predict: {line}" + (f"; {polygons} polygons in {args.vector}" if vector else ""),
            file=sys.stderr,
        )
    return 1 if failed or no_polygons else 0


def _predict_all(
    args: argparse.Namespace,
    inputs: list[str],
    classes: ClassList,
    read: ReadOptions,
    window_options: WindowOptions,
    out_file: Path | None,
    settings: dict[str, Any],
    clashes: dict[str, str],
    request: registry.ModelRequest,
) -> list[dict[str, Any]]:
    """Predict ``inputs`` one after the other in this process; one record per input."""
    single = len(inputs) == 1
    device = resolve_device(args.device)
    model = registry.segmenter(request, device)
    records: list[dict[str, Any]] = []
    with progress(
        inputs, desc="predict", unit="image", disable=args.quiet or single, file=sys.stderr
    ) as files:
        for path in files:
            try:
                if path in clashes:
                    raise UserError(clashes[path])
                record = _predict_one(
                    model, path, classes, out_file, read, window_options, device, args, settings
                )
            except (UserError, RasterioError, OSError) as error:
                message = str(error) if isinstance(error, UserError) else f"{path}: {one_line(error)}"
                if single:
                    raise UserError(message) from None
                record = {"input": path, "status": "failed", "error": message}
                write_line(f"aeroseg predict: skipped: {message}")
            records.append(record)
    return records


def _predict_one(
    model: Any,
    path: str,
    classes: ClassList,
    out_file: Path | None,
    read: ReadOptions,
    window_options: WindowOptions,
    device: Any,
    args: argparse.Namespace,
    settings: dict[str, Any],
) -> dict[str, Any]:
    start = time.perf_counter()
    with RasterSource(path, read) as source:
        class_path = out_file or Path(args.output) / f"{_stem(path)}{places.class_suffix(source)}"
        item = isinstance(path, StacInput)
        paths = places.output_paths(class_path, scores=args.scores, overlay=args.overlay, item=item)
        places.refuse_overwriting_input(path, paths, args.vector)
        record: dict[str, Any] = {"input": path, "outputs": {k: str(v) for k, v in paths.items()}}
        if item:
            record["stac_item"] = path.item["id"]
        record.update(height=source.height, width=source.width)
        if args.vector and source.map_crs is None and not args.vector_pixels:
            raise UserError(checks.no_crs_message(path, "--vector-pixels"))
        places.make_parent(class_path)
        with exclusive(class_path, what="aeroseg predict"):
            if finished(class_path, paths, settings, overwrite=args.overwrite):
                return dict(record, status="skipped")
            if source.no_contrast:
                write_line(f"aeroseg predict: warning: {source.no_contrast}")
            counts = _segment(model, source, classes, paths, window_options, device, args, settings)
            if args.overwrite:  # an earlier run's scores or overlay would pass for this run's
                remove_side_files(class_path, paths, str(path))
    names = classes.ids_to_names
    pixels = {name: int(counts[i]) for i, name in enumerate(names)} | {"nodata": int(counts[255])}
    return dict(record, status="ok", seconds=round(time.perf_counter() - start, 3), pixels=pixels)


def _segment(
    model: Any,
    source: RasterSource,
    classes: ClassList,
    paths: dict[str, Path],
    window_options: WindowOptions,
    device: Any,
    args: argparse.Namespace,
    settings: dict[str, Any],
) -> Any:
    """Write the outputs ``paths`` of ``source``; the pixel count of every class id."""
    total = count_windows(source.height, source.width, window_options)
    with progress(
        total=total, unit="window", leave=False, disable=args.quiet, file=sys.stderr, desc=_stem(source.path)
    ) as bar:
        _, counts = api.run_prediction(
            model, source, classes, paths, collect=False, options=window_options, device=device,
            precision=args.precision, on_windows=bar.update, settings=settings, cog=args.cog,
        )  # fmt: skip
    return counts


def _write_vector(vector: Any, records: list[dict[str, Any]], single: bool) -> int:
    places.make_parent(vector.path)
    remove_stale(vector.path.parent)  # the vector files killed runs left
    try:
        for record in records:
            if record["status"] == "failed":
                continue
            try:
                if POLYGONS in record:  # written by a worker of a Ray run
                    polygons = Path(record.pop(POLYGONS))
                    classes = record["outputs"]["classes"]
                    record["polygons"] = vector.add_file(polygons, classes, source=record["input"])
                    polygons.unlink()
                    with contextlib.suppress(OSError):
                        polygons.parent.rmdir()  # the parts folder of a scene written as one file
                else:
                    record["polygons"] = vector.add(record["outputs"]["classes"], source=record["input"])
            except (UserError, RasterioError, OSError) as error:
                if single:
                    raise UserError(f"no polygons for {record['input']}: {one_line(error)}") from None
                record["vector_error"] = f"no polygons: {one_line(error)}"  # its rasters were written
                write_line(f"aeroseg predict: {record['input']}: {record['vector_error']}")
        vector.finish()
    except BaseException:
        vector.abort()
        raise
    return vector.count


_stem = places.input_stem


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers, got {text!r}") from None
    return low, high
