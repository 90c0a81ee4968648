"""``aeroseg evaluate``: s-mIoU, u-mIoU, h-mIoU and mIoU of a model or of a folder of predictions.

Either ``--checkpoint DIR`` (a trained model: a checkpoint folder, a training run whose ``final/`` holds one,
or a CAT-Seg / OVRS file) or ``--preset NAME`` of a model that needs no training (public weights; ``--clip``,
``--guidance``, ... choose them, ``--config FILE`` sets its fields) runs the model on every image of the
split, or ``--predictions DIR`` scores ``DIR/<stem>.png``
class-id maps made by any other model (SAN, SED, CAT-Seg, ...) under the same protocol. Prints a table
and, with ``--json``, writes the scores and the metadata ``aeroseg report`` reads.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from aeroseg import registry
from aeroseg.atomic import write_text
from aeroseg.cli import options
from aeroseg.data import DatasetInfo, SegmentationDataset
from aeroseg.device import resolve_device
from aeroseg.errors import UserError
from aeroseg.evaluation.scoring import score_model, score_predictions
from aeroseg.metrics import ConfusionMatrix, SegmentationScores
from aeroseg.precision import AUTO_HELP, CHOICES, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="prepared (canonical) dataset"
    )
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument(
        "--predictions",
        type=Path,
        metavar="DIR",
        help="folder of <stem>.png or <stem>.tif class-id maps (what aeroseg predict writes) to score instead",
    )
    options.add_model(parser.add_argument_group("model (or --predictions)"), default_preset=None)
    parser.add_argument("--json", type=Path, metavar="FILE", help="write scores and metadata to this JSON")
    parser.add_argument(
        "--method",
        help="name recorded for `aeroseg report` (default: the model's preset, or the folder name)",
    )
    parser.add_argument(
        "--mode",
        choices=("reference", "whole", "slide"),
        default="reference",
        help="reference: the paper's protocol (640² resize, 384-px crops + global view, CAT-Seg); "
        "whole: one forward per image; slide: our sliding windows (default: reference)",
    )
    parser.add_argument(
        "--window", type=int, default=512, help="slide mode: window side in pixels (default 512)"
    )
    parser.add_argument(
        "--overlap", type=float, default=0.25, help="slide mode: window overlap (default 0.25)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="images (whole) or windows (slide) per forward (default 1)"
    )
    parser.add_argument(
        "--num-workers", dest="workers", type=int, default=2, metavar="N", help="data-loading processes"
    )
    options.add_alias(parser, "--workers", dest="workers", type=int)
    options.add_device(parser)
    parser.add_argument("--precision", choices=CHOICES, default="fp32", help=AUTO_HELP)
    options.add_quiet(parser)


def load_model(args: argparse.Namespace, device: Any) -> Any:
    """The model to evaluate, in eval mode on ``device``: a checkpoint, or a preset that needs none."""
    if args.checkpoint is None and args.preset is None:
        raise UserError(
            "nothing to evaluate: give --checkpoint DIR (a trained model), --preset NAME (one that needs no "
            f"checkpoint: {', '.join(registry.untrained_presets())}) or --predictions DIR"
        )
    return registry.segmenter(options.model_request(args), device)


def _load_dataset(args: argparse.Namespace) -> SegmentationDataset:
    return SegmentationDataset(args.data, split=args.split)  # raises if the split has no images


def _validate(args: argparse.Namespace) -> None:
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch-size must be >= 1 and --workers >= 0")
    if args.window < 1 or not 0 <= args.overlap < 1:
        raise UserError("--window must be >= 1 and --overlap in [0, 1)")
    model_flags = [
        f for f in ("checkpoint", "preset", *options.WEIGHT_FLAGS, "config") if getattr(args, f, None)
    ]
    if args.predictions is not None and model_flags:
        raise UserError(
            f"--predictions scores files; --{model_flags[0]} names a model to run: give one or the other"
        )
    if args.predictions is not None and args.precision != "fp32":
        raise UserError("--predictions scores files; --precision applies to a model run: leave it out")


def format_table(scores: SegmentationScores, title: str) -> str:
    """Per-class IoU (seen / unseen marked) then s-, u-, h-mIoU and mIoU, as plain text."""
    width = max([len("class"), *map(len, scores.per_class_iou)])
    unseen = set(scores.unseen)
    lines = [title, f"{'id':>3}  {'class':<{width}}  {'split':<6}  {'IoU':>6}"]
    for index, (name, iou) in enumerate(scores.per_class_iou.items()):
        split = "unseen" if name in unseen else "seen"
        lines.append(f"{index:>3}  {name:<{width}}  {split:<6}  {_number(iou):>6}")
    lines.append(
        f"s-mIoU {_number(scores.s_miou)}  u-mIoU {_number(scores.u_miou)}  "
        f"h-mIoU {_number(scores.h_miou)}  mIoU {_number(scores.miou)}"
    )
    return "\n".join(lines)


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def metadata(
    args: argparse.Namespace, info: DatasetInfo, num_images: int, model: Any = None
) -> dict[str, Any]:
    """The JSON keys that describe what was scored (written before the scores)."""
    config = getattr(model, "config", None)
    preset = getattr(config, "preset", None)
    no_checkpoint = args.checkpoint is None and getattr(args, "preset", None) is not None
    method = args.method or preset or (args.predictions.name if args.predictions else None)
    mode = "predictions" if args.predictions is not None else args.mode
    return {
        "method": method,
        "preset": preset,
        "dataset": info.name,
        "data": str(args.data),
        "split": args.split,
        "checkpoint": str(args.checkpoint) if args.checkpoint is not None else None,
        "clip": getattr(config, "clip", None) if no_checkpoint else None,  # the preset's backbones
        "guidance": getattr(config, "guidance", None) if no_checkpoint else None,
        "predictions": str(args.predictions) if args.predictions is not None else None,
        "mode": mode,
        "precision": None if args.predictions is not None else args.precision,  # the one used (auto resolved)
        "window": args.window if mode == "slide" else None,
        "overlap": args.overlap if mode == "slide" else None,
        "num_images": num_images,
        "classes": list(info.classes),
        "ignore_index": info.ignore_index,
    }


def run(args: argparse.Namespace) -> int:
    _validate(args)
    dataset = _load_dataset(args)
    info = dataset.info
    model = None
    if args.predictions is not None:
        cm: ConfusionMatrix = score_predictions(dataset, args.predictions, progress=not args.quiet)
    else:
        device = resolve_device(args.device)
        args.precision = resolve(args.precision, device)
        model = load_model(args, device)
        cm = score_model(
            model,
            dataset,
            mode=args.mode,
            window=args.window,
            overlap=args.overlap,
            batch_size=args.batch_size,
            workers=args.workers,
            device=device,
            precision=args.precision,
            progress=not args.quiet,
        )
    scores = cm.compute(info.classes, info.unseen)
    meta = metadata(args, info, len(dataset), model)
    source = (
        meta["checkpoint"]
        or meta["predictions"]
        or f"{args.preset} (clip {meta['clip']}, guidance {meta['guidance']})"
    )
    print(format_table(scores, f"{info.name} {args.split}: {len(dataset)} images, {meta['mode']}, {source}"))
    if args.json is not None:
        document = {**meta, **scores.to_dict(), "confusion_matrix": cm.matrix.cpu().tolist()}
        if cm.missed.any():  # labelled pixels a saved prediction left as nodata, by true class
            document["missed"] = cm.missed.cpu().tolist()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.json, json.dumps(document, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    return 0
