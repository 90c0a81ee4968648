"""Tiny random models built in memory (``aeroseg bench --short``): the real model code of AerOSeg and of the
training-free presets on backbones of a few thousand parameters, so that a forward pass on a 64×64 image
takes milliseconds."""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    Sam2Config,
    Sam2Model,
    Sam3Config,
    Sam3Model,
    SamConfig,
    SamModel,
)

from aeroseg.config import AerOSegConfig
from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.errors import UserError
from aeroseg.modeling.aeroseg import AerOSeg
from aeroseg.registry import preset_config
from aeroseg.training_free.config import TrainingFreeConfig
from aeroseg.training_free.model import TrainingFreeSegmenter
from aeroseg.training_free.segearth_config import SegEarthOV3Config, SegEarthOVConfig
from aeroseg.training_free.segearth_ov import SegEarthOV
from aeroseg.training_free.segearth_ov3 import SegEarthOV3
from aeroseg.training_free.simfeatup import SimFeatUp

IMAGE_SIZE = 64  # CLIP input of the tiny model (patch 8 → an 8×8 correlation grid) and SAM input
TINY_SAM3_SIZE = 112  # image side of the tiny SAM 3: 8×8 patches of 14; FPN levels 32², 16², 8², 4²
TINY_TEMPLATES = ("a photo of a {}.", "an aerial image of {}.")  # the training-free presets' prompts

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


def tiny_clip_config(patch_size: int = 8, image_size: int = 32) -> CLIPConfig:
    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
        vocab_size=49408, eos_token_id=49407, pad_token_id=49407, bos_token_id=49406,
    )  # fmt: skip
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=image_size,
        patch_size=patch_size,
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


def tiny_sam3_config(width: int = 32) -> Sam3Config:
    """Every part of SAM 3 at width 32, one or two layers, 8 queries."""
    small = {"hidden_size": width, "num_attention_heads": 2, "intermediate_size": 2 * width}
    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "num_hidden_layers": 2,
                "image_size": TINY_SAM3_SIZE,
                "patch_size": 14,
                "window_size": 4,
                "global_attn_indexes": [1],
                "pretrain_image_size": 56,
                **small,
            },
            "fpn_hidden_size": width,
            "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]],
        },
        text_config={"num_hidden_layers": 1, "max_position_embeddings": 32, "projection_dim": width, **small},
        geometry_encoder_config={"num_layers": 1, **small},
        detr_encoder_config={"num_layers": 1, **small},
        detr_decoder_config={"num_layers": 1, "num_queries": 8, **small},
        mask_decoder_config={"hidden_size": width, "num_attention_heads": 2},
    )


TINY_GUIDANCE_LAYERS = {"sam": (2, 3), "clip": (1, 2)}  # blocks of the tiny SAM (4) and CLIP (3)


def _tiny_training_free(config: Any) -> Any:
    """The training-free presets on tiny backbones: ``training-free`` (CLIP patch 8 and SAM, crops of 32),
    ``segearth-ov`` (CLIP patch 16 and SimFeatUp jbu_stack, 2×2 crops of 32), ``segearth-ov3`` (SAM 3 at 112)."""
    if isinstance(config, TrainingFreeConfig):
        config = config.replace(
            clip_image_size=IMAGE_SIZE, clip_crop=32, clip_stride=16, prompt_templates=TINY_TEMPLATES,
            region_clusters=4, guidance_image_size=IMAGE_SIZE,
        )  # fmt: skip
        sam = SamModel(tiny_sam_config()).vision_encoder if config.guidance_type == "sam" else None
        return TrainingFreeSegmenter.assemble(config, CLIPModel(tiny_clip_config()), clip_tokenizer(), sam)
    if isinstance(config, SegEarthOVConfig):
        config = config.replace(
            slide_crop=32,
            slide_stride=16,
            image_size=48,
            prompt_templates=TINY_TEMPLATES,
            simfeatup_kind="jbu_stack",
        )  # radius 3: the 2×2 grid of a crop becomes 4×4, more than the reflected radius
        clip = CLIPModel(tiny_clip_config(patch_size=16, image_size=32))
        upsampler = SimFeatUp(clip.config.projection_dim, config.simfeatup_kind) if config.simfeatup else None
        return SegEarthOV.assemble(config, clip, clip_tokenizer(), upsampler)
    return SegEarthOV3(config, Sam3Model(tiny_sam3_config()).eval(), clip_tokenizer())


def build_tiny(preset: str = "aeroseg", seed: int = 0) -> Any:
    """A tiny random model with the architecture of ``preset`` (offline, nothing written to disk)."""
    config = preset_config(preset)
    if isinstance(config, TrainingFreeConfig | SegEarthOVConfig | SegEarthOV3Config):
        torch.manual_seed(seed)
        return _tiny_training_free(config)
    if not isinstance(config, AerOSegConfig):
        raise UserError(
            f"preset {preset!r} has no tiny version; --short runs the AerOSeg and training-free presets"
        )
    layers = TINY_GUIDANCE_LAYERS.get(config.guidance_type, config.guidance_layers)
    config = config.replace(**TINY_MODEL, guidance_layers=layers)
    torch.manual_seed(seed)
    guidance = {
        "sam": lambda: SamModel(tiny_sam_config()).vision_encoder,
        "sam2": lambda: Sam2Model(tiny_sam2_config()).vision_encoder,
        "clip": lambda: None,
    }[config.guidance_type]()
    return AerOSeg._assemble(config, CLIPModel(tiny_clip_config()), clip_tokenizer(), guidance)
