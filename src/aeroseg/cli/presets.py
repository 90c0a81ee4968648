"""``aeroseg presets``: the model presets, one line each."""

from __future__ import annotations

import argparse

from aeroseg.presets import PRESETS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="also print each preset's backbones")


def run(args: argparse.Namespace) -> int:
    width = max(map(len, PRESETS))
    for name, builder in PRESETS.items():
        summary = (builder.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<{width}}  {summary}")
        if args.verbose:
            config = builder()
            if hasattr(config, "guidance_type"):
                backbones = f"clip={config.clip_arch} guidance={config.guidance_type}:{config.guidance_arch}"
            else:  # segearth-ov, segearth-ov3
                names = ("clip_arch", "simfeatup", "sam3_arch")
                backbones = " ".join(f"{k}={getattr(config, k)}" for k in names if hasattr(config, k))
            print(f"{'':<{width}}  {backbones}")
    return 0
