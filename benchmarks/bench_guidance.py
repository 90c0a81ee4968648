"""Guidance encoders side by side: ours, today's ``transformers`` forward and the official code, same input.

    python benchmarks/bench_guidance.py [--encoders sam-vit-l,sam2.1-hiera-b+] [--repeats 3] [--threads 2]
        [--attention sdpa] [--json benchmarks/results/guidance_cpu.json]

For each encoder one random-weight model is built (seeded), its weights are copied into the official module
when the official package can be imported, and every variant runs one forward on the same 1×3×S×S input,
alternating (variant order rotated each repeat) at 1024² after one untimed run of each; the minimum per
variant is kept. Printed: seconds, ratios to
ours, and the largest relative difference of each variant's output to ours (the same computation: ~1e-6).

Variants: ``ours`` (``aeroseg.encoders.sam_image_encoder`` / ``hiera_image_encoder``, the path ``predict``
runs; ``--attention`` picks sdpa, flex or eager), ``transformers`` (``SamVisionEncoder`` / ``Sam2VisionModel``
forward, what aeroseg ran before) and ``official`` (``segment_anything.modeling.ImageEncoderViT`` from PyPI's
``segment-anything``; ``sam2.modeling.backbones`` from a checkout of facebookresearch/sam2 on PYTHONPATH).
Nothing is installed here: an official package that does not import is reported as absent. Only the modules
needed are imported (their packages' ``__init__`` pull torchvision, hydra and iopath, which the image encoders
do not use).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import types
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import Sam2Model, SamModel

from aeroseg.convert.arch import load_arch_config
from aeroseg.encoders.hiera_image_encoder import hiera_fpn_forward
from aeroseg.encoders.sam_image_encoder import ATTENTION_PATHS, sam_vit_forward
from aeroseg.measure import FLOP_MAPPING, gemm_peak, sustained_gemm

SAM_OFFICIAL = {  # segment-anything build_sam.py: (embed_dim, depth, num_heads, global_attn_indexes)
    "sam-vit-b": (768, 12, 12, (2, 5, 8, 11)),
    "sam-vit-l": (1024, 24, 16, (5, 11, 17, 23)),
    "sam-vit-h": (1280, 32, 16, (7, 15, 23, 31)),
}
SAM2_OFFICIAL = {"sam2-hiera-b+": (112, 2), "sam2.1-hiera-b+": (112, 2)}  # configs/*/..._b+.yaml: Hiera dims


def _bare_import(module: str) -> Any:
    """Import ``pkg.sub.module`` without running the packages' ``__init__`` files (None when not present)."""
    top = module.split(".")[0]
    if top in sys.modules:
        root = Path(next(iter(sys.modules[top].__path__)))
    else:
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.submodule_search_locations:
            return None
        root = Path(next(iter(spec.submodule_search_locations)))
    parts = module.split(".")
    for i in range(1, len(parts)):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root.joinpath(*parts[1:i]))]
            sys.modules[name] = package
    if "iopath.common.file_io" not in sys.modules and importlib.util.find_spec("iopath") is None:
        shim = types.ModuleType("iopath.common.file_io")  # hieradet reads g_pathmgr only to load weights
        shim.g_pathmgr = None  # type: ignore[attr-defined]
        sys.modules.update(
            {"iopath": types.ModuleType("iopath"), "iopath.common": types.ModuleType("iopath.common")}
        )
        sys.modules["iopath.common.file_io"] = shim
    try:
        return importlib.import_module(module)
    except ImportError as error:
        print(f"  {module}: not importable ({error})")
        return None


def _rename(state: dict[str, torch.Tensor], pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in pairs:
            key = key.replace(old, new)
        out[key] = value
    return out


def _official_sam(name: str, encoder: nn.Module) -> nn.Module | None:
    module = _bare_import("segment_anything.modeling.image_encoder")
    if module is None:
        return None
    dim, depth, heads, global_attn = SAM_OFFICIAL[name]
    official = module.ImageEncoderViT(
        img_size=1024, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=4,
        out_chans=256, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True,
        global_attn_indexes=global_attn, window_size=14,
    )  # fmt: skip
    pairs = [("neck.conv1", "neck.0"), ("neck.layer_norm1", "neck.1"), ("neck.conv2", "neck.2")]
    pairs += [("neck.layer_norm2", "neck.3"), ("patch_embed.projection", "patch_embed.proj")]
    pairs += [("layers.", "blocks."), ("layer_norm1", "norm1"), ("layer_norm2", "norm2")]
    state = _rename(encoder.state_dict(), pairs)
    official.load_state_dict(state)
    return official.eval()


def _official_sam2(name: str, encoder: nn.Module) -> nn.Module | None:
    hieradet = _bare_import("sam2.modeling.backbones.hieradet")
    image_encoder = _bare_import("sam2.modeling.backbones.image_encoder")
    position = _bare_import("sam2.modeling.position_encoding")
    if hieradet is None or image_encoder is None or position is None:
        return None
    dim, heads = SAM2_OFFICIAL[name]
    trunk = hieradet.Hiera(embed_dim=dim, num_heads=heads)
    neck = image_encoder.FpnNeck(
        position_encoding=position.PositionEmbeddingSine(num_pos_feats=256, normalize=True, temperature=10000),
        d_model=256, backbone_channel_list=[8 * dim, 4 * dim, 2 * dim, dim], fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )  # fmt: skip
    official = image_encoder.ImageEncoder(trunk=trunk, neck=neck, scalp=1)
    pairs = [("backbone.", "trunk."), ("patch_embed.projection", "patch_embed.proj"), ("layer_norm", "norm")]
    pairs += [("mlp.proj_in", "mlp.layers.0"), ("mlp.proj_out", "mlp.layers.1")]
    state = _rename(encoder.state_dict(), pairs)
    state = {(k[: -len(".weight")] + ".conv.weight" if k.startswith("neck.convs.") and k.endswith("weight")
              else k[: -len(".bias")] + ".conv.bias" if k.startswith("neck.convs.") else k): v
             for k, v in state.items()}  # fmt: skip
    official.load_state_dict(state)
    return official.eval()


def _variants(name: str, attention: str) -> tuple[dict[str, Any], float]:
    """name -> {variant: () -> output tensors}, and the input side."""
    torch.manual_seed(0)
    config = load_arch_config(name)
    sam2 = name.startswith("sam2")
    encoder = (
        (Sam2Model if sam2 else SamModel)._from_config(config, attn_implementation="sdpa").vision_encoder
    )
    with torch.no_grad():  # random weights of a realistic scale (the zero-initialised rel-pos tables too)
        for parameter in encoder.parameters():
            parameter.normal_(0.0, 0.02)
    encoder.eval()
    if sam2:
        official = _official_sam2(name, encoder)
        variants = {
            "ours": lambda px: hiera_fpn_forward(encoder, px),
            "transformers": lambda px: list(encoder(px).fpn_hidden_states),
        }
        if official is not None:
            variants["official"] = lambda px: list(official(px)["backbone_fpn"])
    else:
        official = _official_sam(name, encoder)

        def ours(px: torch.Tensor) -> list[torch.Tensor]:
            return [encoder.neck(sam_vit_forward(encoder, px, taps=(), attention=attention)[0])]

        variants = {"ours": ours, "transformers": lambda px: [encoder(px).last_hidden_state]}
        if official is not None:
            variants["official"] = lambda px: [official(px)]
    return variants, 1024


def _difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(((x - y).abs().max() / y.abs().max()).item() for x, y in zip(a, b, strict=True))


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _sustained() -> float:
    return sustained_gemm(torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="sam-vit-l,sam2.1-hiera-b+")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--attention", default="sdpa", choices=ATTENTION_PATHS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "machine": {
            "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
            "threads": args.threads, "torch": torch.__version__, "load_average_start": os.getloadavg(),
        },
        "attention": args.attention, "repeats": args.repeats, "complete": False, "encoders": {},
    }  # fmt: skip
    result["gemm_peak_fp32_samples"] = [gemm_peak(torch.device("cpu"), torch.float32)]
    for name in args.encoders.split(","):
        print(f"{name}:", flush=True)
        variants, size = _variants(name, args.attention)
        pixels = torch.randn(1, 3, size, size)
        entry: dict[str, Any] = {"image_size": size, "official_present": "official" in variants, "runs": []}
        result["encoders"][name] = entry
        outputs: dict[str, list[torch.Tensor]] = {}
        order = list(variants)
        with torch.no_grad():
            for variant in order:  # untimed: first-call costs (allocations, index caches, lazy imports)
                variants[variant](pixels)
            with FlopCounterMode(display=False, custom_mapping=FLOP_MAPPING) as flops:
                variants["ours"](pixels)
            entry["gflop"] = flops.get_total_flops() / 1e9  # useful work, the same for every variant
            probe = _sustained()
            for repeat in range(args.repeats):
                for variant in order[repeat % len(order) :] + order[: repeat % len(order)]:
                    start, start_cpu = time.perf_counter(), time.process_time()
                    outputs[variant] = variants[variant](pixels)
                    wall, used = time.perf_counter() - start, time.process_time() - start_cpu
                    beside, probe = (probe + (probe := _sustained())) / 2, probe
                    entry["runs"].append(
                        {
                            "variant": variant,
                            "seconds": wall,
                            "cpu_seconds": used,
                            "gemm_sustained_gflops": beside,
                        }
                    )
                    share = entry["gflop"] / wall / beside
                    print(
                        f"  {variant}: {wall:.2f} s (CPU {used:.2f} s, {share:.0%} of the product rate)",
                        flush=True,
                    )
                    _summarise(entry, outputs)
                    _write(args.json, result)  # a run stopped early keeps what it measured
        ratios = ", ".join(f"{t:.2f}× faster than {v}" for v, t in entry["speedup_vs"].items())
        print(f"  ours {entry['seconds']['ours']:.2f} s: {ratios}", flush=True)
    result["gemm_peak_fp32_samples"].append(gemm_peak(torch.device("cpu"), torch.float32))
    peak = result["gemm_peak_fp32_gflops"] = max(result["gemm_peak_fp32_samples"])
    for entry in result["encoders"].values():  # the fastest run against the best product burst
        entry["fraction_of_peak"] = {v: entry["gflop"] / t / peak for v, t in entry["seconds"].items()}
    result["machine"]["load_average_end"] = os.getloadavg()
    result["complete"] = True
    print(json.dumps(result, indent=1))
    _write(args.json, result)


def _summarise(entry: dict[str, Any], outputs: dict[str, list[torch.Tensor]]) -> None:
    """Minima over the runs so far (wall and process CPU time), ratios to ours, output differences to ours."""
    for key in ("seconds", "cpu_seconds"):
        entry[key] = {}
        for run in entry["runs"]:
            entry[key][run["variant"]] = min(entry[key].get(run["variant"], float("inf")), run[key])
    others = [v for v in entry["seconds"] if v != "ours"] if "ours" in entry["seconds"] else []
    entry["speedup_vs"] = {v: entry["seconds"][v] / entry["seconds"]["ours"] for v in others}
    entry["cpu_speedup_vs"] = {v: entry["cpu_seconds"][v] / entry["cpu_seconds"]["ours"] for v in others}
    entry["max_relative_difference_to_ours"] = {v: _difference(outputs[v], outputs["ours"]) for v in others}
    entry["fraction_of_sustained_gemm"] = {}  # each run against the product rate measured around it
    for variant in entry["seconds"]:
        shares = [
            entry["gflop"] / run["seconds"] / run["gemm_sustained_gflops"]
            for run in entry["runs"]
            if run["variant"] == variant
        ]
        entry["fraction_of_sustained_gemm"][variant] = {
            "median": statistics.median(shares),
            "best": max(shares),
        }


def _write(path: Path | None, result: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
