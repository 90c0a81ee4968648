"""``aeroseg presets``: the model presets, one line each: name, family, where the paper reports it, whether
it needs a trained checkpoint to segment, and what it is."""

from __future__ import annotations

import argparse

from aeroseg.cli import options
from aeroseg.registry import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose", action="store_true", help="also print what each preset is and its backbones"
    )
    options.add_quiet(parser)  # accepted as in every verb; the table itself is the output


def run(args: argparse.Namespace) -> int:
    rows = [
        (
            name,
            p.family.name,
            p.paper,
            "needs a checkpoint" if p.family.trained else "no checkpoint",
            p.summary,
        )
        for name, p in PRESETS.items()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row[:4], widths, strict=True)).rstrip())
        if args.verbose:
            config = PRESETS[row[0]].config()
            names = ("clip", "clip_arch", "guidance_type", "guidance", "simfeatup", "sam3", "sam3_arch")
            backbones = " ".join(f"{k}={getattr(config, k)}" for k in names if hasattr(config, k))
            print(f"{'':<{widths[0]}}  {row[4]}\n{'':<{widths[0]}}  {backbones}")
    return 0
