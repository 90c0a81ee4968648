"""One windowed and one global-attention block of SAM ViT-L (64×64 tokens): ours, transformers', official.

    python benchmarks/bench_guidance_blocks.py [--threads 1] [--repeats 2] [--json FILE]

A quicker, less noisy companion of ``bench_guidance.py`` on shared machines: the same three implementations
on the same weights and input, alternating, minima of wall and process CPU time. The official block is
``segment_anything.modeling.image_encoder.Block`` when ``segment-anything`` is installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.models.sam.modeling_sam import SamVisionEncoder

from aeroseg.convert.arch import load_arch_config
from aeroseg.encoders.sam_image_encoder import vit_block

sys.path.insert(0, str(Path(__file__).parent))
from bench_guidance import _bare_import, _cpu_name, _rename, _write  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_arch_config("sam-vit-l").vision_config
    config.num_hidden_layers, config.global_attn_indexes = 2, [1]  # block 0 windowed, block 1 global
    encoder = SamVisionEncoder._from_config(config, attn_implementation="sdpa").eval()
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.normal_(0.0, 0.02)
    module = _bare_import("segment_anything.modeling.image_encoder")
    x = torch.randn(1, 64, 64, config.hidden_size)
    result: dict[str, Any] = {"machine": {"cpu": _cpu_name(), "threads": args.threads}, "blocks": {}}
    for index, kind in enumerate(("windowed", "global")):
        layer = encoder.layers[index]
        variants = {
            "ours": lambda layer=layer: vit_block(layer, x, "sdpa"),
            "transformers": lambda layer=layer: layer(x),
        }
        if module is not None:
            official = module.Block(
                dim=config.hidden_size, num_heads=config.num_attention_heads, mlp_ratio=4.0, qkv_bias=True,
                norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                window_size=config.window_size if kind == "windowed" else 0, input_size=(64, 64),
            )  # fmt: skip
            pairs = [("layer_norm1", "norm1"), ("layer_norm2", "norm2")]
            official.load_state_dict(_rename(layer.state_dict(), pairs))
            variants["official"] = lambda official=official: official.eval()(x)
        cpu: dict[str, float] = {}
        outputs = {}
        with torch.no_grad():
            for _ in range(args.repeats):
                for name, run in variants.items():
                    start = time.process_time()
                    outputs[name] = run()
                    cpu[name] = min(cpu.get(name, float("inf")), time.process_time() - start)
        ours = outputs["ours"]
        result["blocks"][kind] = {
            "cpu_seconds": cpu,
            "cpu_speedup_vs": {n: cpu[n] / cpu["ours"] for n in cpu if n != "ours"},
            "max_relative_difference_to_ours": {
                n: ((o - ours).abs().max() / ours.abs().max()).item()
                for n, o in outputs.items()
                if n != "ours"
            },
        }
        print(kind, json.dumps(result["blocks"][kind]), flush=True)
    _write(args.json, result)


if __name__ == "__main__":
    main()
