"""``aeroseg predict``: segment images and GeoTIFFs of any size with a trained model, or without one.

    aeroseg predict INPUT... --checkpoint CKPT --classes "building,road,tree|forest,water" -o OUT
    aeroseg predict INPUT... --classes "building,road,tree|forest,water" -o OUT    # training-free model

Without ``--checkpoint`` the training-free model (:mod:`aeroseg.training_free`) runs on the public CLIP
ViT-B/16 and SAM ViT-B weights, downloaded into the Hugging Face cache on first use; ``--clip`` and
``--guidance`` choose other weights (hub id, directory or original file; ``--guidance none``: no SAM).

For every input, OUT/<stem>.tif (a GeoTIFF input or any other raster) or OUT/<stem>.png (a plain PNG or
JPEG) holds the class ids; see :mod:`aeroseg.predict.classes` for the id scheme and
:mod:`aeroseg.predict.outputs` for the files. Inputs whose outputs all exist are skipped (``--overwrite``
redoes them). An input that cannot be read is reported and skipped; the run then ends with status 1. When
there is a single input, any problem is an error (status 2) and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rasterio.errors import RasterioError
from tqdm.auto import tqdm

from aeroseg.errors import UserError
from aeroseg.predict import api
from aeroseg.predict.classes import ClassList, parse_classes
from aeroseg.predict.io import RasterSource, ReadOptions, expand_inputs, is_url, one_line
from aeroseg.predict.outputs import atomic
from aeroseg.predict.streaming import PRECISIONS, WindowOptions, count_windows
from aeroseg.training_free.config import DEFAULT_CLIP, DEFAULT_GUIDANCE

PNG_DRIVERS = ("PNG", "JPEG")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "For every input, OUT/<stem>.tif (OUT/<stem>.png for a plain PNG or JPEG) holds uint8 class ids: the "
        "classes in the order given from 0, or from 1 with id 0 = background when --background-threshold is "
        "set; 255 = nodata. The names are in the file's metadata. Inputs whose outputs exist are skipped."
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders, glob patterns or URLs"
    )
    parser.add_argument(
        "--checkpoint",
        help="model directory written by aeroseg train (default: the training-free model, public weights)",
    )
    parser.add_argument(
        "--clip",
        metavar="ID|DIR|FILE",
        help=f"without --checkpoint: CLIP weights of the training-free model (default {DEFAULT_CLIP})",
    )
    parser.add_argument(
        "--guidance",
        metavar="ID|DIR|FILE|none",
        help=f"without --checkpoint: its SAM weights, or none (default {DEFAULT_GUIDANCE})",
    )
    parser.add_argument(
        "--preset",
        choices=("training-free", "segearth-ov", "segearth-ov3"),
        help="without --checkpoint: the training-free model to run (default training-free)",
    )
    parser.add_argument(
        "--simfeatup", metavar="FILE|hf://...|none", help="--preset segearth-ov: SimFeatUp .ckpt"
    )
    parser.add_argument(
        "--sam3", metavar="ID|DIR", help="--preset segearth-ov3: SAM 3 (default facebook/sam3)"
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--classes", help='comma-separated class names; "tree|forest" gives synonyms')
    group.add_argument(
        "--classes-file", help="text file (one class a line) or YAML list / mapping to synonyms"
    )
    parser.add_argument("-o", "--output", required=True, help="output folder (created when missing)")
    parser.add_argument(
        "--background-threshold",
        type=float,
        metavar="T",
        help="pixels whose best score is below T get id 0 'background'; classes then start at 1",
    )
    image = parser.add_argument_group("image")
    image.add_argument(
        "--bands", type=_ints, help="1-based bands for R,G,B (e.g. 3,2,1) or one band for grey"
    )
    image.add_argument(
        "--scale", type=_pair, metavar="MIN,MAX", help="value range mapped to [0, 1] (all bands)"
    )
    image.add_argument(
        "--percentiles",
        type=_pair,
        metavar="LOW,HIGH",
        help="per-band percentiles mapped to [0, 1] (default 2,98; uint8 images default to /255)",
    )
    image.add_argument("--nodata", type=float, help="nodata value, overriding the file's")
    model = parser.add_argument_group("inference")
    model.add_argument("--window", type=int, default=512, help="window side in pixels (default 512)")
    model.add_argument(
        "--overlap", type=float, default=0.25, help="window overlap, a fraction (default 0.25)"
    )
    model.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    model.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    model.add_argument("--precision", choices=list(PRECISIONS), default="fp32", help="autocast precision")
    out = parser.add_argument_group("outputs")
    out.add_argument(
        "--scores", action="store_true", help="also write <stem>_scores: the best class probability"
    )
    out.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png with a legend")
    out.add_argument("--vector", metavar="FILE", help="polygons of all images into FILE.gpkg or FILE.geojson")
    out.add_argument(
        "--min-area", type=float, default=0.0, help="drop polygons smaller than this (CRS units²)"
    )
    out.add_argument(
        "--simplify", type=float, default=0.0, help="polygon simplification tolerance (CRS units)"
    )
    out.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist")
    out.add_argument("--json", metavar="FILE", help="write a JSON summary of the run")
    out.add_argument("--quiet", action="store_true", help="no progress bars or summary")


def run(args: argparse.Namespace) -> int:
    classes = parse_classes(args.classes, args.classes_file, args.background_threshold)
    options = WindowOptions(window=args.window, overlap=args.overlap, batch_size=args.batch_size)
    read = ReadOptions(args.bands, args.scale, args.percentiles, args.nodata)
    vector = None
    if args.vector:
        vector = api.vector_writer(args.vector, min_area=args.min_area, simplify=args.simplify)
    inputs = expand_inputs(args.inputs)
    _check_stems(inputs)
    device = api.resolve_device(args.device)
    weights = {k: v for k, v in (("clip", args.clip), ("guidance", args.guidance)) if v is not None}
    extra = {"preset": args.preset, "simfeatup": args.simfeatup, "sam3": args.sam3}
    model = api.load_segmenter(args.checkpoint, device, **weights, **{k: v for k, v in extra.items() if v})
    out_dir = Path(args.output)
    single = len(inputs) == 1
    records: list[dict[str, Any]] = []
    with tqdm(inputs, unit="image", disable=True if args.quiet or single else None, file=sys.stderr) as files:
        for path in files:
            try:
                record = _predict_one(model, path, classes, out_dir, read, options, device, args)
            except (UserError, RasterioError, OSError) as error:
                message = str(error) if isinstance(error, UserError) else f"{path}: {one_line(error)}"
                if single:
                    raise UserError(message) from None
                record = {"input": path, "status": "failed", "error": message}
                tqdm.write(f"aeroseg predict: skipped: {message}", file=sys.stderr)
            records.append(record)
    polygons = _write_vector(vector, records, single) if vector is not None else None
    failed = [r for r in records if r["status"] == "failed"]
    summary = {
        "classes": classes.ids_to_names,
        "synonyms": dict(zip(classes.names, classes.synonyms, strict=True)),
        "nodata_id": 255,
        "ok": sum(r["status"] == "ok" for r in records),
        "skipped": sum(r["status"] == "skipped" for r in records),
        "failed": len(failed),
        "vector": args.vector,
        "polygons": polygons,
        "images": records,
    }
    if args.json:
        with atomic(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    if not args.quiet or failed:
        line = (
            f"{summary['ok']} segmented, {summary['skipped']} skipped (outputs exist), {len(failed)} failed"
        )
        print(
            f"aeroseg predict: {line}" + (f"; {polygons} polygons in {args.vector}" if vector else ""),
            file=sys.stderr,
        )
    return 1 if failed else 0


def _predict_one(
    model: Any,
    path: str,
    classes: ClassList,
    out_dir: Path,
    read: ReadOptions,
    options: WindowOptions,
    device: Any,
    args: argparse.Namespace,
) -> dict[str, Any]:
    start = time.perf_counter()
    with RasterSource(path, read) as source:
        plain = source.driver in PNG_DRIVERS and not source.georeferenced
        paths = api.output_paths(
            out_dir / f"{_stem(path)}{'.png' if plain else '.tif'}", scores=args.scores, overlay=args.overlay
        )
        if not is_url(path) and any(p.exists() and os.path.samefile(p, path) for p in paths.values()):
            raise UserError(
                f"the output {paths['classes']} would overwrite the input; choose another -o folder"
            )
        record: dict[str, Any] = {"input": path, "outputs": {k: str(v) for k, v in paths.items()}}
        record.update(height=source.height, width=source.width)
        if not args.overwrite and all(p.exists() for p in paths.values()):
            return dict(record, status="skipped")
        out_dir.mkdir(parents=True, exist_ok=True)
        total = count_windows(source.height, source.width, options)
        with tqdm(
            total=total,
            unit="window",
            leave=False,
            disable=True if args.quiet else None,
            file=sys.stderr,
            desc=_stem(path),
        ) as bar:
            _, counts = api.run_prediction(
                model,
                source,
                classes,
                paths,
                collect=False,
                options=options,
                device=device,
                precision=args.precision,
                on_windows=bar.update,
            )
    names = classes.ids_to_names
    pixels = {name: int(counts[i]) for i, name in enumerate(names)} | {"nodata": int(counts[255])}
    return dict(record, status="ok", seconds=round(time.perf_counter() - start, 3), pixels=pixels)


def _write_vector(vector: Any, records: list[dict[str, Any]], single: bool) -> int:
    try:
        for record in records:
            if record["status"] == "failed":
                continue
            try:
                record["polygons"] = vector.add(record["outputs"]["classes"], source=record["input"])
            except (UserError, RasterioError, OSError) as error:
                if single:
                    raise UserError(f"no polygons for {record['input']}: {one_line(error)}") from None
                record.update(status="failed", error=f"no polygons: {one_line(error)}")
                tqdm.write(f"aeroseg predict: {record['input']}: {record['error']}", file=sys.stderr)
        vector.finish()
    except BaseException:
        vector.abort()
        raise
    return vector.count


def _check_stems(inputs: list[str]) -> None:
    seen: dict[str, str] = {}
    for path in inputs:
        other = seen.setdefault(_stem(path), path)
        if other != path:
            raise UserError(
                f"{other} and {path} would write the same outputs; run them into separate -o folders"
            )


def _stem(path: str) -> str:
    name = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] if is_url(path) else os.path.basename(path)
    return os.path.splitext(name)[0] or "image"


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated band numbers, got {text!r}") from None


def _pair(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers, got {text!r}") from None
    return low, high
