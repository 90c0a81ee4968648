"""Tiny random backbones written to disk in the transformers format, and tiny AerOSeg models built from them.

The model-building code under test is the real one (``aeroseg.build`` loads these directories offline);
only the sizes are tiny, so that a forward pass on a 64×64 image takes milliseconds.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPConfig, CLIPModel, Sam2Config, Sam2Model, SamConfig, SamModel

import aeroseg
from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.presets import preset_config

CLIP_IMAGE_SIZE = 64  # tiny CLIP patch 8 → an 8×8 correlation grid

TINY_MODEL = dict(
    clip_image_size=CLIP_IMAGE_SIZE,
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
    return CLIPConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            vocab_size=49408,
            eos_token_id=49407,
            pad_token_id=49407,
            bos_token_id=49406,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )


def tiny_sam_config() -> SamConfig:
    return SamConfig(
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
            output_channels=16,
            global_attn_indexes=[1, 3],
            window_size=2,
            mlp_dim=64,
            initializer_range=0.02,
        )
    )


def tiny_sam2_config() -> Sam2Config:
    return Sam2Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam2_hiera_det_model",
                hidden_size=8,
                num_attention_heads=1,
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[8, 16, 32, 64],
                num_attention_heads_per_stage=[1, 1, 2, 2],
                global_attention_blocks=[3],
                window_size_per_stage=[4, 4, 4, 2],
                image_size=[64, 64],
                window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[64, 32, 16, 8],
            fpn_hidden_size=16,
        )
    )


def write_tiny_backbones(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write tiny CLIP (with tokenizer files), SAM and SAM2 directories under ``root``; return their paths."""
    root = Path(root)
    paths = {name: root / name for name in ("clip", "sam", "sam2")}
    if all((p / "config.json").exists() for p in paths.values()):
        return paths
    torch.manual_seed(seed)
    CLIPModel(tiny_clip_config()).save_pretrained(paths["clip"])
    clip_tokenizer().save_pretrained(paths["clip"])
    SamModel(tiny_sam_config()).save_pretrained(paths["sam"])
    Sam2Model(tiny_sam2_config()).save_pretrained(paths["sam2"])
    return paths


def tiny_overrides(preset: str, paths: dict[str, Path]) -> dict[str, Any]:
    """Config overrides that put a preset on the tiny backbones."""
    config = preset_config(preset)
    overrides: dict[str, Any] = dict(TINY_MODEL, clip=str(paths["clip"]))
    if config.guidance_type == "sam":
        overrides.update(guidance=str(paths["sam"]), guidance_layers=(2, 3))
    elif config.guidance_type == "sam2":
        overrides.update(guidance=str(paths["sam2"]))
    else:
        overrides.update(guidance_layers=(1, 2))
    return overrides


_SHARED: dict[str, Path] = {}


def shared_tiny_backbones() -> dict[str, Path]:
    """The tiny backbones, written once per test process into a temporary directory removed at exit."""
    if not _SHARED:
        root = Path(tempfile.mkdtemp(prefix="aeroseg-tiny-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED.update(write_tiny_backbones(root))
    return _SHARED


def build_tiny_model(tmp_path: Path | None = None, preset: str = "aeroseg", seed: int = 0, **overrides: Any):
    """A tiny AerOSeg of ``preset`` built through ``aeroseg.build`` from the shared tiny backbones
    (``tmp_path`` is accepted for symmetry with other fixtures and not used)."""
    paths = shared_tiny_backbones()
    torch.manual_seed(seed)
    return aeroseg.build(preset, **{**tiny_overrides(preset, paths), **overrides})
