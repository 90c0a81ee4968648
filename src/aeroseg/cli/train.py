"""``aeroseg train``: train a model on a prepared dataset (one process, or one per GPU under ``torchrun``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from aeroseg import registry
from aeroseg.cli import options
from aeroseg.cli.options import DEVICE_HELP, DEVICE_METAVAR, WEIGHTS_METAVAR
from aeroseg.errors import UserError
from aeroseg.training.train_config import PRECISIONS, TrainConfig, load_yaml, merge

_MODEL_FLAGS = ("clip", "guidance", "lr")  # flags that set AerOSegConfig fields (under `model:`)
_TRAIN_FLAGS = tuple(
    "data out preset steps batch_size save_every seed device precision num_workers quiet eval_every".split()
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # the flags default to None (a --config file's value stays); their help shows the defaults they keep
    cfg = TrainConfig()
    model = registry.preset_config(cfg.preset)
    parser.epilog = (
        "Settings resolve in this order, later wins: defaults, the run's config.yaml (with --resume), "
        "--config, flags. Multi-GPU: torchrun --nproc_per_node=8 -m aeroseg train ... (see docs/training.md)."
    )
    parser.add_argument("--data", metavar="DIR", help="prepared dataset (DIR/dataset.yaml, DIR/train/...)")
    parser.add_argument(
        "-o",
        "--output",
        dest="out",
        metavar="RUN",
        help="run directory for config, metrics, checkpoints, final/",
    )
    options.add_alias(parser, "--out", dest="out")
    parser.add_argument(
        "--preset", metavar="NAME", help=f"model preset (default {cfg.preset}; `aeroseg presets`)"
    )
    parser.add_argument("--config", metavar="FILE", help="YAML of training settings and `model:` overrides")
    preset_default = f"default: the preset's; {cfg.preset}:"
    parser.add_argument(
        "--clip",
        metavar=WEIGHTS_METAVAR,
        help=f"CLIP weights: hub id, local folder or file ({preset_default} {model.clip})",
    )
    parser.add_argument(
        "--guidance",
        metavar=WEIGHTS_METAVAR,
        help=f"guidance encoder (SAM/SAM2) weights ({preset_default} {model.guidance})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help=f"optimizer steps (default {cfg.steps}; paper: 10k iSAID, 5k DLRSD, 15k OEM)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"GLOBAL batch, split across DDP processes (default {cfg.batch_size})",
    )
    parser.add_argument(
        "--lr",
        type=float,
        help=f"lr of the new modules ({preset_default} {model.lr:g}; CLIP q/v: model.clip_lr)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="continue RUN from its newest checkpoint, or from the checkpoint folder given",
    )
    parser.add_argument(
        "--save-every", type=int, metavar="N", help=f"checkpoint every N steps (default {cfg.save_every})"
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help=f"seed of the init, data order and augmentation (default {cfg.seed})",
    )
    parser.add_argument("--device", metavar=DEVICE_METAVAR, help=f"{DEVICE_HELP} (default: auto)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, help=f"fp32, bf16 or fp16 (GradScaler) (default {cfg.precision})"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        metavar="N",
        help=f"data-loading processes per GPU (default {cfg.num_workers})",
    )
    options.add_quiet(parser, default=None)
    parser.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help=f"score DIR/val (s/u/h-mIoU) every N steps (default {cfg.eval_every}: off)",
    )


def _check_resume(args: argparse.Namespace) -> None:
    """``--resume`` needs a run or a checkpoint that exists: say which is missing (before any other check)."""
    if args.resume == "latest":
        if not args.out:
            raise UserError(
                "--resume continues a run: pass -o RUN (its directory), or --resume RUN/checkpoints/step_NNNNNN"
            )
        if not (Path(args.out) / "config.yaml").is_file():
            what = "does not exist" if not Path(args.out).exists() else "holds no run (no config.yaml)"
            raise UserError(f"nothing to resume: run directory {args.out} {what}")
    elif args.resume and not Path(args.resume).is_dir():
        raise UserError(f"nothing to resume: checkpoint {args.resume} does not exist")


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- RUN/config.yaml (resuming) <- --config <- flags."""
    _check_resume(args)
    if args.device is not None and options.check_device(args.device) == "auto":
        args.device = None  # the config's "auto": the first GPU when there is one, else the CPU
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
    if cfg.quiet:  # quiet: true in a config file also silences the backbones' loading bars
        options.quiet_libraries(True)
    final = train(cfg, resume=args.resume)
    if not cfg.quiet and os.environ.get("RANK", "0") == "0":
        print(f"aeroseg train: model saved to {final}")
    return 0
