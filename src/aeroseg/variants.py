"""The AerOSeg variants the paper reports, one explicit config builder each (docs/model.md, "Variants"), and
the rule that fits the preset's guidance blocks to the encoder loaded. Every model family of the package is
listed, with these builders, in :mod:`aeroseg.registry`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from aeroseg.config import GENERIC_TEMPLATES, AerOSegConfig
from aeroseg.errors import CheckpointError, UserError

_CLIP_GUIDANCE = dict(guidance_type="clip", guidance=None, guidance_arch=None, guidance_layers=(4, 8))


def aeroseg() -> AerOSegConfig:
    """Config-C, the paper's model: CLIP ViT-B/16 + SAM ViT-L guidance, back-projection, RS prompts."""
    return AerOSegConfig(preset="aeroseg")


def baseline() -> AerOSegConfig:
    """Table 3 Baseline (OVRS-like): CLIP guidance (blocks 4 and 8), generic prompt, no back-projection."""
    return AerOSegConfig(
        preset="baseline", prompt_templates=GENERIC_TEMPLATES, back_projection=False, **_CLIP_GUIDANCE
    )


def config_a() -> AerOSegConfig:
    """Table 3 Config-A: Baseline + SAM ViT-L guidance."""
    return AerOSegConfig(preset="config-a", prompt_templates=GENERIC_TEMPLATES, back_projection=False)


def config_b() -> AerOSegConfig:
    """Table 3 Config-B: Config-A + semantic back-projection loss."""
    return AerOSegConfig(preset="config-b", prompt_templates=GENERIC_TEMPLATES)


def aeroseg_sam_vit_h() -> AerOSegConfig:
    """Table 6: SAM ViT-H guidance; blocks 11 and 21 (**choice**: a third and two thirds of 32, as 8/16 of 24)."""
    return AerOSegConfig(
        preset="aeroseg-sam-vit-h",
        guidance="facebook/sam-vit-huge",
        guidance_arch="sam-vit-h",
        guidance_layers=(11, 21),
    )


def aeroseg_sam2_hiera_b_plus() -> AerOSegConfig:
    """Table 6: SAM2 Hiera-B+ guidance (FPN levels at strides 16, 8, 4)."""
    return AerOSegConfig(
        preset="aeroseg-sam2-hiera-b+",
        guidance_type="sam2",
        guidance="facebook/sam2-hiera-base-plus",
        guidance_arch="sam2-hiera-b+",
    )


def aeroseg_sam2_1_hiera_b_plus() -> AerOSegConfig:
    """Table 6: SAM2.1 Hiera-B+ guidance."""
    return AerOSegConfig(
        preset="aeroseg-sam2.1-hiera-b+",
        guidance_type="sam2",
        guidance="facebook/sam2.1-hiera-base-plus",
        guidance_arch="sam2.1-hiera-b+",
    )


def aeroseg_sam3() -> AerOSegConfig:
    """SAM 3's image encoder (ViT + FPN, facebook/sam3, gated: SAM License) as the guidance encoder, frozen;
    its FPN levels ×1, ×2, ×4 of the ViT grid feed the final feature and decoder stages 1 and 2."""
    return AerOSegConfig(
        preset="aeroseg-sam3",
        guidance_type="sam3",
        guidance="facebook/sam3",
        guidance_arch="sam3",
    )


def aeroseg_clip_vit_l() -> AerOSegConfig:
    """Supplementary Table 7: CLIP ViT-L/14 at 336² (grid 24×24)."""
    return AerOSegConfig(
        preset="aeroseg-clip-vit-l",
        clip="openai/clip-vit-large-patch14-336",
        clip_arch="clip-vit-l-14-336",
        clip_image_size=336,
    )


def aeroseg_georsclip() -> AerOSegConfig:
    """Supplementary Table 7: GeoRSCLIP ViT-L/14 (open_clip checkpoint RS5M_ViT-L-14.pt) at 336². QuickGELU:
    RS5M fine-tunes OpenAI's CLIP, loaded as its README does with ``create_model_and_transforms(...,
    pretrained="openai")``, which builds QuickGELU."""
    return AerOSegConfig(
        preset="aeroseg-georsclip",
        clip="hf://Zilun/GeoRSCLIP/ckpt/RS5M_ViT-L-14.pt",
        clip_arch="clip-vit-l-14",
        clip_image_size=336,
        clip_activation="quick_gelu",
    )


def aeroseg_skyclip() -> AerOSegConfig:
    """Supplementary Table 7: SkyCLIP ViT-L/14 (open_clip checkpoint from the SkyScript release) at 336²;
    the checkpoint file must be given with ``clip=``. QuickGELU: SkyCLIP continues OpenAI's CLIP and SkyScript's
    notebooks load it with ``force_quick_gelu=True``."""
    return AerOSegConfig(
        preset="aeroseg-skyclip",
        clip="",
        clip_arch="clip-vit-l-14",
        clip_image_size=336,
        clip_activation="quick_gelu",
    )


def cat_seg() -> AerOSegConfig:
    """CAT-Seg (CVPR'24) in this code: one rotation, CLIP guidance, generic prompt, plain decoder."""
    return AerOSegConfig(
        preset="cat-seg",
        rotations=(0,),
        prompt_templates=GENERIC_TEMPLATES,
        back_projection=False,
        decoder_attention=False,
        **_CLIP_GUIDANCE,
    )


def cat_seg_large() -> AerOSegConfig:
    """CAT-Seg with CLIP ViT-L/14 at 336² (its released ``model_large.pth``; ``configs/vitl_336.yaml``):
    CLIP blocks 8 and 16 guide the decoder through 1024-channel upsamplers."""
    return cat_seg().replace(
        preset="cat-seg-large",
        clip="openai/clip-vit-large-patch14-336",
        clip_arch="clip-vit-l-14-336",
        clip_image_size=336,
        guidance_layers=(8, 16),
    )


def ovrs() -> AerOSegConfig:
    """OVRS (TGRS'25) in this code: four rotations, CLIP guidance, generic prompt, attention-aware decoder
    (the same architecture as the Baseline, which the paper builds from it)."""
    return AerOSegConfig(
        preset="ovrs", prompt_templates=GENERIC_TEMPLATES, back_projection=False, **_CLIP_GUIDANCE
    )


AEROSEG_PRESETS: dict[str, Callable[[], AerOSegConfig]] = {
    "aeroseg": aeroseg,
    "baseline": baseline,
    "config-a": config_a,
    "config-b": config_b,
    "aeroseg-sam-vit-h": aeroseg_sam_vit_h,
    "aeroseg-sam2-hiera-b+": aeroseg_sam2_hiera_b_plus,
    "aeroseg-sam2.1-hiera-b+": aeroseg_sam2_1_hiera_b_plus,
    "aeroseg-sam3": aeroseg_sam3,
    "aeroseg-clip-vit-l": aeroseg_clip_vit_l,
    "aeroseg-georsclip": aeroseg_georsclip,
    "aeroseg-skyclip": aeroseg_skyclip,
    "cat-seg": cat_seg,
    "cat-seg-large": cat_seg_large,
    "ovrs": ovrs,
}


def preset_config(name: str, **overrides: Any) -> AerOSegConfig:
    """The config of AerOSeg preset ``name`` with ``overrides`` (any :class:`AerOSegConfig` field) applied."""
    if name not in AEROSEG_PRESETS:
        raise UserError(f"unknown AerOSeg preset {name!r}; choose one of: {', '.join(AEROSEG_PRESETS)}")
    try:
        return AEROSEG_PRESETS[name]().replace(**overrides)
    except (TypeError, ValueError) as error:
        raise UserError(f"preset {name!r}: {error}") from None


def fit_guidance_layers(config: AerOSegConfig, depth: int, what: str) -> AerOSegConfig:
    """``config`` with guidance blocks that exist in an encoder of ``depth`` blocks.

    The preset's own blocks that do not fit (SAM ViT-B's 12 blocks under ``aeroseg``'s 8 and 16 of ViT-L's
    24) are replaced by a third and two thirds of the depth, the rule the presets follow, with a warning
    that says which were taken; blocks set explicitly that do not fit are an error naming the allowed range.
    """
    layers = config.guidance_layers
    if all(1 <= i <= depth for i in layers):
        return config
    thirds = (max(1, round(depth / 3)), max(1, round(2 * depth / 3)))
    builder = AEROSEG_PRESETS.get(config.preset)
    if builder is not None and getattr(builder(), "guidance_layers", None) == layers:
        warnings.warn(
            f"guidance_layers: the {config.preset} preset's blocks {layers} do not fit this {what} encoder of "
            f"{depth} blocks; took blocks {thirds} (a third and two thirds of its depth, as the presets do)",
            stacklevel=3,
        )
        return config.replace(guidance_layers=thirds)
    raise CheckpointError(
        f"guidance_layers {layers} do not fit the {what} guidance encoder of {depth} blocks: give two block "
        f"numbers in 1..{depth} (the presets take a third and two thirds: {list(thirds)})"
    )
