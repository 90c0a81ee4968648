"""How much the guidance maps change when they are shrunk to the correlation grid with or without a low-pass filter.

    PYTHONPATH=src python benchmarks/guidance_resize.py IMAGE.tif [--arch sam-vit-b] [--out FILE.json]

Runs a SAM image encoder with random weights (seeded; the shipped architecture ``--arch``, no download) on the
top-left 1000×1000 window of IMAGE, takes the maps the AerOSeg guidance encoder takes (the neck, blocks 8 and
16 for ViT-L, 4 and 8 for ViT-B; 64×64 each at 1024 input) and brings them to the grids of a ViT-B/16 CLIP
(24, and 48 for the second decoder map) with ``bilinear`` (no low-pass, the previous behaviour),
``antialias`` (the default) and ``area``. Reports for each map the relative L2 difference
||bilinear - antialias|| / ||antialias|| and the mean cosine similarity of the feature vectors at each
position, and the same for area against antialias.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from aeroseg.backbones import load_guidance_encoder
from aeroseg.data import read_image
from aeroseg.modeling.guidance_encoder import _resize

LAYERS = {"sam-vit-b": (4, 8), "sam-vit-l": (8, 16), "sam-vit-h": (8, 16)}


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    rel = float((a - b).norm() / b.norm())
    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())
    return {"relative_l2": round(rel, 4), "mean_cosine": round(cos, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--arch", default="sam-vit-b", choices=sorted(LAYERS))
    parser.add_argument("--grid", type=int, default=24)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    encoder = load_guidance_encoder("sam", None, arch=args.arch, pretrained=False).eval()
    image = read_image(args.image)[:, :1000, :1000][None]
    pixels = torch.nn.functional.interpolate(image, size=(1024, 1024), mode="bilinear", align_corners=False)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    started = time.perf_counter()
    with torch.no_grad():
        x = encoder.patch_embed((pixels - mean) / std)
        x = x + encoder.pos_embed
        maps = {}
        for i, block in enumerate(encoder.layers, start=1):
            x = block(x)
            if i in LAYERS[args.arch]:
                maps[f"block{i}"] = x.permute(0, 3, 1, 2)
        maps["neck"] = encoder.neck(x)
    seconds = time.perf_counter() - started
    grids = {
        "neck": args.grid,
        f"block{LAYERS[args.arch][0]}": args.grid,
        f"block{LAYERS[args.arch][1]}": 2 * args.grid,
    }
    results = {}
    for name, grid in grids.items():
        shrunk = {mode: _resize(maps[name], grid, mode) for mode in ("antialias", "area", "bilinear")}
        results[f"{name} {tuple(maps[name].shape[-2:])}->{grid}"] = {
            "bilinear_vs_antialias": compare(shrunk["bilinear"], shrunk["antialias"]),
            "area_vs_antialias": compare(shrunk["area"], shrunk["antialias"]),
        }
    document = {
        "image": args.image.name,
        "window": "top-left 1000x1000, resized to 1024",
        "encoder": f"{args.arch}, random weights (seed 0)",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "encoder_seconds": round(seconds, 1),
        "results": results,
    }
    print(json.dumps(document, indent=2))
    if args.out:
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
