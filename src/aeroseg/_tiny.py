"""Tiny random AerOSeg models built in memory (``aeroseg bench --short``): the real model code on backbones of a
few thousand parameters, so that a forward pass on a 64×64 image takes milliseconds."""

from __future__ import annotations

from typing import Any

import torch
from transformers import CLIPConfig, CLIPModel, Sam2Config, Sam2Model, SamConfig, SamModel

from aeroseg.config import AerOSegConfig
from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.errors import UserError
from aeroseg.modeling.aeroseg import AerOSeg
from aeroseg.variants import preset_config

IMAGE_SIZE = 64  # CLIP input of the tiny model (patch 8 → an 8×8 correlation grid) and SAM input

TINY_MODEL: dict[str, Any] = dict(
    clip_image_size=IMAGE_SIZE,
    hidden_dim=32,
    window_size=4,
    spatial_heads=2,
    class_heads=2,
    guidance_proj_dim=16,
    text_proj_dim=16,
    back_projection_hidden=32,
    decoder_dims=(32, 16),
    decoder_guidance_dims=(8, 8),
)


def tiny_clip_config() -> CLIPConfig:
    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
        vocab_size=49408, eos_token_id=49407, pad_token_id=49407, bos_token_id=49406,
    )  # fmt: skip
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8
    )  # fmt: skip
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def tiny_sam_config() -> SamConfig:
    vision = dict(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=16,
        output_channels=16, global_attn_indexes=[1, 3], window_size=2, mlp_dim=64, initializer_range=0.02,
    )  # fmt: skip
    return SamConfig(vision_config=vision)


def tiny_sam2_config() -> Sam2Config:
    # No global-attention block may open a stage (transformers divides the window by the query stride there).
    backbone = dict(
        model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 2, 2],
        global_attention_blocks=[3], window_size_per_stage=[4, 4, 4, 2], image_size=[IMAGE_SIZE, IMAGE_SIZE],
        window_positional_embedding_background_size=[4, 4],
    )  # fmt: skip
    vision = dict(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=16)
    return Sam2Config(vision_config=vision)


TINY_GUIDANCE_LAYERS = {"sam": (2, 3), "clip": (1, 2)}  # blocks of the tiny SAM (4) and CLIP (3)


def build_tiny(preset: str = "aeroseg", seed: int = 0) -> Any:
    """A tiny random AerOSeg with the architecture of ``preset`` (offline, nothing written to disk)."""
    config = preset_config(preset)
    if not isinstance(config, AerOSegConfig):
        raise UserError(f"preset {preset!r} has no tiny version; --short runs the AerOSeg presets")
    layers = TINY_GUIDANCE_LAYERS.get(config.guidance_type, config.guidance_layers)
    config = config.replace(**TINY_MODEL, guidance_layers=layers)
    torch.manual_seed(seed)
    guidance = {
        "sam": lambda: SamModel(tiny_sam_config()).vision_encoder,
        "sam2": lambda: Sam2Model(tiny_sam2_config()).vision_encoder,
        "clip": lambda: None,
    }[config.guidance_type]()
    return AerOSeg._assemble(config, CLIPModel(tiny_clip_config()), clip_tokenizer(), guidance)
