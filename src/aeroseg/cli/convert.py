"""``aeroseg convert FILE OUT_DIR``: an official checkpoint file of any family the registry knows (CAT-Seg /
OVRS ``.pth``, ...) -> a self-contained checkpoint directory (``config.json``, ``model.safetensors``, the
tokenizer), loadable with ``aeroseg.load`` and ``--checkpoint`` everywhere.

The directory is written under a temporary name beside ``OUT_DIR`` and renamed when complete; an existing
``OUT_DIR`` is never overwritten.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aeroseg.atomic import atomic_dir
from aeroseg.cli import options
from aeroseg.errors import UserError
from aeroseg.hub import hub_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", type=Path, metavar="FILE", help="CAT-Seg / OVRS checkpoint (.pth), or hf://OWNER/REPO/FILE"
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="new checkpoint directory")
    parser.add_argument(
        "--preset",
        metavar="NAME",
        help="model the file holds (default: read from the file; CAT-Seg / OVRS: rotations and decoder -> ovrs, "
        "CLIP ViT-B/16 -> cat-seg, ViT-L/14@336 -> cat-seg-large)",
    )
    options.add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from aeroseg import registry  # torch and the model code load only when the command runs

    out = args.out_dir.expanduser()
    if out.exists():
        raise UserError(f"{out} already exists; choose a new OUT_DIR (convert never overwrites)")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent} is not a directory; create it first")
    source = Path(hub_file(str(args.file), "checkpoint")).expanduser()
    if not source.is_file():
        raise UserError(
            f"{args.file} is not a file; give an official checkpoint file (a CAT-Seg / OVRS .pth)"
        )
    if not args.quiet:
        print(f"reading {source}")
    model = registry.load(source, preset=args.preset)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
    if not args.quiet:
        tensors = len(model.state_dict())
        print(
            f"wrote {out}: preset {model.config.preset}, {tensors} tensors; load it with --checkpoint {out}"
        )
    return 0
