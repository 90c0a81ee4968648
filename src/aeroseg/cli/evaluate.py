"""``aeroseg evaluate``: s-mIoU, u-mIoU, h-mIoU and mIoU of a model or of a folder of predictions.

Either ``--checkpoint DIR`` (an AerOSeg checkpoint, or a training run whose ``final/`` holds one) or
``--preset training-free`` (public CLIP / SAM weights, no training; ``--clip`` and ``--guidance`` choose
them) runs the model on every image of the split, or ``--predictions DIR`` scores ``DIR/<stem>.png``
class-id maps made by any other model (SAN, SED, CAT-Seg, ...) under the same protocol. Prints a table
and, with ``--json``, writes the scores and the metadata ``aeroseg report`` reads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from aeroseg import AerOSeg
from aeroseg.cli import options
from aeroseg.cli.options import WEIGHTS_METAVAR
from aeroseg.data import DatasetInfo, SegmentationDataset
from aeroseg.errors import UserError
from aeroseg.evaluation.scoring import score_model, score_predictions
from aeroseg.metrics import ConfusionMatrix, SegmentationScores
from aeroseg.training_free import build_training_free
from aeroseg.training_free.config import DEFAULT_CLIP, DEFAULT_GUIDANCE
from aeroseg.training_free.presets import (
    TRAINING_FREE_PRESETS,
    build_training_free_preset,
    preset_file_overrides,
)

TRAINING_FREE = "training-free"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="prepared (canonical) dataset"
    )
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--checkpoint", type=Path, metavar="DIR", help="AerOSeg checkpoint dir or training run"
    )
    source.add_argument(
        "--predictions",
        type=Path,
        metavar="DIR",
        help="folder of <stem>.png or <stem>.tif class-id maps (what aeroseg predict writes) to score instead",
    )
    source.add_argument(
        "--preset",
        choices=list(TRAINING_FREE_PRESETS),
        help="a model that needs no checkpoint: training-free (ours), segearth-ov or segearth-ov3",
    )
    parser.add_argument(
        "--simfeatup", metavar="FILE|hf://...|none", help="--preset segearth-ov: SimFeatUp .ckpt"
    )
    parser.add_argument(
        "--sam3", metavar="ID|DIR", help="--preset segearth-ov3: SAM 3 (default facebook/sam3)"
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="--preset: per-dataset settings, configs/<dataset>/training-free/*.yaml",
    )
    parser.add_argument(
        "--clip",
        metavar=WEIGHTS_METAVAR,
        help=f"--preset {TRAINING_FREE}: CLIP weights (default {DEFAULT_CLIP})",
    )
    parser.add_argument(
        "--guidance",
        metavar=WEIGHTS_METAVAR,
        help=f"--preset {TRAINING_FREE}: SAM weights, or none (default {DEFAULT_GUIDANCE})",
    )
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
    options.add_quiet(parser)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU; other names as torch reads them."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA but torch sees no GPU; use --device cpu")
    return device


def _checkpoint_dir(path: Path) -> Path:
    """A checkpoint dir as given, or ``RUN/final`` for a training run directory."""
    if not (path / "config.json").is_file() and (path / "final" / "config.json").is_file():
        return path / "final"
    return path


def load_model(args: argparse.Namespace) -> Any:
    """The model to evaluate, built from the command-line arguments (on the CPU, not yet in eval mode)."""
    config_file = getattr(args, "config", None)
    if getattr(args, "preset", None) == TRAINING_FREE and config_file is None:
        return build_training_free(clip=args.clip or DEFAULT_CLIP, guidance=args.guidance or DEFAULT_GUIDANCE)
    if getattr(args, "preset", None) in TRAINING_FREE_PRESETS:
        weights = {k: getattr(args, k, None) for k in ("clip", "guidance", "simfeatup", "sam3")}
        overrides = preset_file_overrides(config_file, args.preset) if config_file else None
        return build_training_free_preset(args.preset, overrides=overrides, **weights)
    if args.checkpoint is None:
        raise UserError(
            f"nothing to evaluate: give --checkpoint DIR (a trained model), --preset {TRAINING_FREE} or "
            "--predictions DIR"
        )
    return AerOSeg.from_pretrained(_checkpoint_dir(args.checkpoint))


def _load_dataset(args: argparse.Namespace) -> SegmentationDataset:
    return SegmentationDataset(args.data, split=args.split)  # raises if the split has no images


def _validate(args: argparse.Namespace) -> None:
    if args.batch_size < 1 or args.workers < 0:
        raise UserError("--batch-size must be >= 1 and --workers >= 0")
    if args.window < 1 or not 0 <= args.overlap < 1:
        raise UserError("--window must be >= 1 and --overlap in [0, 1)")
    if (getattr(args, "clip", None) or getattr(args, "guidance", None)) and getattr(
        args, "preset", None
    ) is None:
        raise UserError(f"--clip and --guidance choose the weights of --preset {TRAINING_FREE}; add it")


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def metadata(
    args: argparse.Namespace, info: DatasetInfo, num_images: int, model: Any = None
) -> dict[str, Any]:
    """The JSON keys that describe what was scored (written before the scores)."""
    config = getattr(model, "config", None)
    preset = getattr(config, "preset", None)
    no_checkpoint = getattr(args, "preset", None) is not None
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
        model = load_model(args).to(device).eval()
        cm = score_model(
            model,
            dataset,
            mode=args.mode,
            window=args.window,
            overlap=args.overlap,
            batch_size=args.batch_size,
            workers=args.workers,
            device=device,
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
        write_text_atomic(args.json, json.dumps(document, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    return 0
