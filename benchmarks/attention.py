"""Fused against eager attention in the backbones: one block of each kind at the paper's sizes, random weights.

CLIP ViT-B/16 on the four rotations of a 384² input (4 × 577 tokens) and SAM ViT-L on its 64×64 token grid,
a windowed block (14×14 windows) and a global one. Each block is built with ``attn_implementation`` "eager"
and "sdpa" (what ``aeroseg.backbones`` sets), the two run alternately, and the median seconds are
reported with the largest difference of their outputs.

    python benchmarks/attention.py                       # → benchmarks/results/attention.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.models.sam.modeling_sam import SamVisionLayer

from aeroseg.cli.bench import write_json
from aeroseg.convert.arch import load_arch_config
from aeroseg.measure import machine

RESULTS = Path(__file__).resolve().parent / "results" / "attention.json"


def blocks(implementation: str) -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    """name → (block, input) with the given attention implementation (same seed, same weights)."""
    clip = load_arch_config("clip-vit-b-16").vision_config
    sam = load_arch_config("sam-vit-l").vision_config
    for config in (clip, sam):
        config._attn_implementation = implementation
    torch.manual_seed(0)
    grid = sam.image_size // sam.patch_size
    return {
        "clip_vit_b16_layer": (CLIPEncoderLayer(clip), torch.randn(4, 577, clip.hidden_size)),
        "sam_vit_l_windowed_layer": (
            SamVisionLayer(sam, sam.window_size),
            torch.randn(1, grid, grid, sam.hidden_size),
        ),
        "sam_vit_l_global_layer": (SamVisionLayer(sam, 0), torch.randn(1, grid, grid, sam.hidden_size)),
    }


def run(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = block(x, None) if isinstance(block, CLIPEncoderLayer) else block(x)
    return out[0] if isinstance(out, tuple) else out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    eager, sdpa = blocks("eager"), blocks("sdpa")
    rows = {}
    with torch.inference_mode():
        for name in eager:
            (a, x), (b, _) = eager[name], sdpa[name]
            b.load_state_dict(a.state_dict())
            difference = (run(a, x) - run(b, x)).abs().max().item()
            times: dict[str, list[float]] = {"eager": [], "sdpa": []}
            for _ in range(args.repeats):
                for label, block in (("eager", a), ("sdpa", b)):
                    start = time.perf_counter()
                    run(block, x)
                    times[label].append(time.perf_counter() - start)
            row = {label: statistics.median(t) for label, t in times.items()}
            rows[name] = {**row, "speedup": row["eager"] / row["sdpa"], "max_abs_difference": difference}
            print(
                f"{name:<26} eager {row['eager']:.3f} s  sdpa {row['sdpa']:.3f} s  ×{rows[name]['speedup']:.2f}"
            )
    write_json({"machine": machine(torch.device("cpu")), "repeats": args.repeats, "blocks": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
