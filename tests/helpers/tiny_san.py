"""Tiny SAN models: the official-layout checkpoints of the fixture, and small random ones for unit tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import CLIPConfig, CLIPModel

from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.san import SAN, SANConfig
from tests.helpers.hashed_weights import hashed_state_dict

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "san_official.safetensors"


def read_fixture() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(FIXTURE), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def official_checkpoint(meta: dict[str, str], kind: str, path: Path) -> Path:
    """The fixture's ``kind`` model as SAN's trainer writes it (``{"model": state_dict, "iteration": N}``),
    every tensor hashed from its key as the fixture script filled it (``logit_scale`` = log 100)."""
    state = hashed_state_dict(json.loads(meta[f"{kind}.keys"]))
    state["ov_classifier.logit_scale"] = torch.tensor(math.log(100.0))
    torch.save({"model": state, "iteration": 59999}, path)
    return path


def tiny_clip(seed: int = 0, *, width: int = 64, layers: int = 6) -> CLIPModel:
    """A random CLIP of width ``width`` (heads of 32), patch 16 at 64² and a 2-layer text tower of width 32."""
    torch.manual_seed(seed)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1)
    vision = dict(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 32,
        patch_size=16,
        image_size=64,
    )
    config = CLIPConfig(
        text_config={**text, "hidden_act": "quick_gelu"}, vision_config={**vision, "hidden_act": "quick_gelu"}
    )
    config.projection_dim = 32
    return CLIPModel._from_config(config, attn_implementation="sdpa")


def tiny_san_config(**overrides) -> SANConfig:
    """A small SAN: 6 CLIP layers (4 for features), a 4-block side adapter of width 48, 10 queries."""
    values = dict(
        preset="san-tiny",
        feature_last_layer=4,
        fusion_map=("0->0", "2->1", "4->2"),
        side_width=48,
        side_heads=3,
        side_depth=4,
        side_image_size=64,
        num_queries=10,
        deep_supervision=(3, 4),
        attn_bias_heads=2,
        embed_channels=16,
        mlp_channels=16,
        train_num_points=256,
        prompt_templates=("a photo of a {}.", "There is a {} in the scene"),
    )
    return SANConfig(**{**values, **overrides})


def tiny_san(seed: int = 0, **overrides) -> SAN:
    clip = tiny_clip(seed)
    torch.manual_seed(seed)
    return SAN.assemble(tiny_san_config(**overrides), clip, clip_tokenizer())
