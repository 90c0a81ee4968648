"""``aeroseg convert FILE OUT_DIR``: a CAT-Seg / OVRS checkpoint file -> a self-contained AerOSeg checkpoint
directory (``config.json``, ``model.safetensors``, the tokenizer), loadable with ``AerOSeg.from_pretrained``.

The directory is written under a temporary name beside ``OUT_DIR`` and renamed when complete; an existing
``OUT_DIR`` is never overwritten.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from aeroseg.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", type=Path, metavar="FILE", help="CAT-Seg / OVRS checkpoint (.pth), or hf://OWNER/REPO/FILE"
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="new AerOSeg checkpoint directory")
    parser.add_argument(
        "--preset",
        choices=["cat-seg", "cat-seg-large", "ovrs"],
        help="model the file holds (default: read from the file: rotations and decoder -> ovrs, CLIP ViT-B/16 "
        "-> cat-seg, ViT-L/14@336 -> cat-seg-large)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    from aeroseg.backbones import hub_file
    from aeroseg.convert.catseg import load_catseg

    out = args.out_dir.expanduser()
    if out.exists():
        raise UserError(f"{out} already exists; choose a new OUT_DIR (convert never overwrites)")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent} is not a directory; create it first")
    source = Path(hub_file(str(args.file), "checkpoint")).expanduser()
    if not source.is_file():
        raise UserError(f"{args.file} is not a file; give a CAT-Seg / OVRS checkpoint (.pth)")
    if not args.quiet:
        print(f"reading {source}")
    model = load_catseg(source, preset=args.preset)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not args.quiet:
        tensors = len(model.state_dict())
        print(
            f"wrote {out}: preset {model.config.preset}, {tensors} tensors; load it with --checkpoint {out}"
        )
    return 0
