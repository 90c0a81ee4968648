"""A tiny random SAM 3 (``transformers.Sam3Model``) written to disk in the transformers format."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Sam3Config, Sam3Model

TINY_SAM3_SIZE = 112  # image side: 8×8 patches of 14; FPN levels 32², 16², 8², 4²


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


def write_tiny_sam3(root: Path, seed: int = 0) -> Path:
    """Save a tiny random SAM 3 under ``root/sam3`` (once) and return the directory."""
    path = Path(root) / "sam3"
    if not (path / "config.json").exists():
        torch.manual_seed(seed)
        Sam3Model(tiny_sam3_config()).save_pretrained(path)
    return path
