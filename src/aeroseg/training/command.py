"""``aeroseg train``: train a model on a prepared dataset (one process, or one per GPU under ``torchrun``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from aeroseg.training.train_config import PRECISIONS, TrainConfig, load_yaml, merge

_MODEL_FLAGS = ("clip", "guidance", "lr")  # flags that set AerOSegConfig fields (under `model:`)
_TRAIN_FLAGS = tuple(
    "data out preset steps batch_size save_every seed device precision num_workers quiet eval_every".split()
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Settings resolve in this order, later wins: defaults, the run's config.yaml (with --resume), "
        "--config, flags. Multi-GPU: torchrun --nproc_per_node=8 -m aeroseg train ... (see docs/training.md)."
    )
    parser.add_argument("--data", metavar="DIR", help="prepared dataset (DIR/dataset.yaml, DIR/train/...)")
    parser.add_argument("--out", metavar="RUN", help="run directory for config, metrics, checkpoints, final/")
    parser.add_argument("--preset", metavar="NAME", help="model preset (default aeroseg; `aeroseg presets`)")
    parser.add_argument("--config", metavar="FILE", help="YAML of training settings and `model:` overrides")
    parser.add_argument("--clip", metavar="ID|DIR|FILE", help="CLIP weights: hub id, local folder or file")
    parser.add_argument("--guidance", metavar="ID|DIR|FILE", help="guidance encoder (SAM/SAM2) weights")
    parser.add_argument(
        "--steps", type=int, metavar="N", help="optimizer steps (paper: 10k iSAID, 5k DLRSD, 15k OEM)"
    )
    parser.add_argument(
        "--batch-size", type=int, metavar="N", help="GLOBAL batch, split across DDP processes (default 4)"
    )
    parser.add_argument(
        "--lr", type=float, help="lr of the new modules (default 2e-4; CLIP q/v: model.clip_lr)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="continue RUN from its newest checkpoint, or from the checkpoint folder given",
    )
    parser.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps (default 1000)")
    parser.add_argument(
        "--seed", type=int, metavar="N", help="seed of the init, data order and augmentation (default 0)"
    )
    parser.add_argument("--device", metavar="DEV", help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--precision", choices=PRECISIONS, help="fp32 (default), bf16 or fp16 (GradScaler)")
    parser.add_argument(
        "--num-workers", type=int, metavar="N", help="data-loading processes per GPU (default 4)"
    )
    parser.add_argument("--quiet", action="store_true", default=None, help="no progress bar")
    parser.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help="score DIR/val (s/u/h-mIoU) every N steps (default 0: off)",
    )


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- RUN/config.yaml (resuming) <- --config <- flags."""
    cfg = TrainConfig()
    out = args.out
    if args.resume and not out and args.resume != "latest":  # RUN/checkpoints/step_NNNNNN -> RUN
        out = str(Path(args.resume).resolve().parent.parent)
    if args.resume and out and (Path(out) / "config.yaml").is_file():
        cfg = merge(cfg, load_yaml(Path(out) / "config.yaml"), f"{out}/config.yaml")
    if args.config:
        cfg = merge(cfg, load_yaml(args.config), args.config)
    flags = {name: getattr(args, name) for name in _TRAIN_FLAGS if getattr(args, name) is not None}
    model = {name: getattr(args, name) for name in _MODEL_FLAGS if getattr(args, name) is not None}
    cfg = merge(cfg, {**flags, "model": model, **({"out": out} if out else {})}, "command line")
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    from aeroseg.training.trainer import train  # torch, the model and the data code load only when training

    cfg = resolve_config(args)
    if cfg.quiet:  # also silence the download and weight-loading bars of the backbones
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bars()
        disable_progress_bar()
    final = train(cfg, resume=args.resume)
    if not cfg.quiet and os.environ.get("RANK", "0") == "0":
        print(f"aeroseg train: model saved to {final}")
    return 0
