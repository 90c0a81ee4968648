"""Parameters and FLOPs of ``aeroseg-sam3`` beside the other guidance encoders, counted on the meta device
(no weights allocated, nothing computed: seconds on any machine, independent of its load).

For each preset: parameters and trainable parameters of the whole model, the guidance encoder's parameters,
and the FLOPs (``FlopCounterMode``: 2 per multiply-add) of one forward of the guidance encoder at its own
input size. The rest of the model is the same for every preset (``model_size.py`` counts whole forwards).

    python benchmarks/sam3_guidance_size.py            # → benchmarks/results/sam3_guidance_size.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from aeroseg.cli.bench import machine, write_json
from aeroseg.registry import build

RESULTS = Path(__file__).resolve().parent / "results" / "sam3_guidance_size.json"
PRESETS = ("aeroseg", "aeroseg-sam-vit-h", "aeroseg-sam2-hiera-b+", "aeroseg-sam3")


def gflop(function) -> float:
    """FLOPs of ``function()`` in billions."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        function()
    return counter.get_total_flops() / 1e9


def measure(preset: str) -> dict:
    with torch.device("meta"):
        model = build(preset, pretrained=False).eval()
    encoder = model.guidance_encoder
    side = encoder.image_size
    row = {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "guidance_params": sum(p.numel() for p in encoder.parameters()),
        "guidance_input": side,
        "guidance_gflop": gflop(lambda: encoder.encoder(torch.zeros(1, 3, side, side, device="meta"))),
    }
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = {}
    for preset in args.presets:
        rows[preset] = r = measure(preset)
        print(
            f"{preset:<22} {r['params'] / 1e6:7.1f}M params ({r['trainable'] / 1e6:5.1f}M trainable)  guidance "
            f"{r['guidance_params'] / 1e6:6.1f}M, {r['guidance_gflop']:7.0f} GFLOP at {r['guidance_input']}²",
            flush=True,
        )
    write_json(
        {"machine": machine(torch.device("cpu")), "counted_on": "meta device", "presets": rows}, args.json
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
