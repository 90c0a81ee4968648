"""The typed configuration of SAN (Xu et al., CVPR 2023, ``MendelXu/SAN``), presets ``san`` and ``san-large``.

Every default is the official value: ``san/config.py`` (``add_san_config``) overridden by
``configs/Base-coco-stuff-164K-171.yaml``, ``configs/san_clip_vit_res4_coco.yaml`` (ViT-B/16, the paper's
Table 2 model) and ``configs/san_clip_vit_large_res4_coco.yaml`` (ViT-L/14@336); each comment names its key
(``SAN.`` = ``MODEL.SAN.``, ``SIDE.`` = ``MODEL.SIDE_ADAPTER.``). Official settings with the one value this
code implements: ``SIDE.NAME`` RegionwiseSideAdapterNetwork, ``SIDE.FUSION_TYPE`` add, ``SIDE.PRETRAINED``
False (the side adapter trains from scratch), ``SIDE.DROP_PATH_RATE`` 0.0, ``SAN.REC_CROSS_ATTN`` False (the
[SOS] tokens join the deeper CLIP layers' self-attention), ``SAN.SOS_TOKEN_FORMAT`` cls_token,
``SAN.CLIP_DEEPER_FROZEN_EXCLUDE`` [] (the deeper layers are frozen), ``SAN.SEM_SEG_POSTPROCESS_BEFORE_INFERENCE``
True, ``SAN.NUM_CLASSES`` (here: the length of the class list), the OpenAI pixel mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aeroseg.config import ConfigBase
from aeroseg.mask_classification.templates import VILD_TEMPLATES

Downsample = Literal["max", "avg", "bilinear", "bicubic", "nearest"]


@dataclass
class SANConfig(ConfigBase):
    """Configuration of :class:`aeroseg.san.SAN`; field names are used unchanged down to the modules."""

    preset: str = "san"  # name of the preset this config was built from (informational)

    # --- frozen CLIP -------------------------------------------------------------------------------------
    clip: str = "openai/clip-vit-base-patch16"  # SAN.CLIP_MODEL_NAME ViT-B/16 + CLIP_PRETRAINED_NAME openai:
    #   hub id, transformers directory or original OpenAI / open_clip file of those weights
    clip_arch: str = "clip-vit-b-16"  # shipped architecture for pretrained=False
    clip_activation: Literal["quick_gelu", "gelu"] = (
        "quick_gelu"  # open_clip builds OpenAI weights with QuickGELU
    )
    asymmetric_input: bool = True  # SAN.ASYMETRIC_INPUT: CLIP sees the image rescaled by clip_resolution
    clip_resolution: float = 0.5  # SAN.CLIP_RESOLUTION (bilinear scale factor of the CLIP input)
    feature_last_layer: int = 9  # SAN.FEATURE_LAST_LAYER_IDX: CLIP layers 1..9 extract features, the rest
    #   recognise masks
    train_clip_position_embedding: bool = True  # SAN.CLIP_FROZEN_EXCLUDE [positional_embedding]: the only
    #   CLIP weight that trains
    prompt_templates: tuple[str, ...] = VILD_TEMPLATES  # SAN.CLIP_TEMPLATE_SET vild
    rec_downsample: Downsample = "max"  # SAN.REC_DOWNSAMPLE_METHOD: attention biases to the CLIP grid
    size_divisibility: int = 32  # SAN.SIZE_DIVISIBILITY: images are zero-padded to a multiple (normalised)

    # --- side adapter network ------------------------------------------------------------------------
    side_width: int = 240  # SIDE.VIT_NAME vit_w240n6d8_patch16: width ...
    side_heads: int = 6  # ... 6 heads ...
    side_depth: int = 8  # ... 8 blocks ...
    side_patch: int = 16  # ... patch 16 (timm VisionTransformer, MLP ratio 4, LayerNorm eps 1e-6)
    side_mlp_ratio: float = 4.0  # timm vit default
    side_image_size: int = 640  # SIDE.IMAGE_SIZE: its position embedding grid is side_image_size / side_patch
    num_queries: int = 100  # SIDE.NUM_QUERIES: learnable query tokens = mask proposals
    fusion_map: tuple[str, ...] = ("0->0", "3->1", "6->2", "9->3")  # SIDE.FUSION_MAP: "CLIP layer ->
    #   side block" (0 = the CLIP embeddings after ln_pre / before the first side block)
    deep_supervision: tuple[int, ...] = (7, 8)  # SIDE.DEEP_SUPERVISION_IDXS: side blocks whose output is
    #   decoded (the last one at inference; all supervised in training)
    attn_bias_heads: int = 12  # SIDE.ATTN_BIAS.NUM_HEADS (the CLIP heads, or 1 shared by all)
    attn_bias_layers: int = 1  # SIDE.ATTN_BIAS.NUM_LAYERS (1: one bias for every deeper CLIP layer)
    embed_channels: int = 256  # SIDE.ATTN_BIAS.EMBED_CHANNELS
    mlp_channels: int = 256  # SIDE.ATTN_BIAS.MLP_CHANNELS
    mlp_layers: int = 3  # SIDE.ATTN_BIAS.MLP_NUM_LAYERS
    rescale_attn_bias: bool = True  # SIDE.ATTN_BIAS.RESCALE_ATTN_BIAS: a learned affine of the biases

    # --- criterion (Mask2Former's) -------------------------------------------------------------------
    no_object_weight: float = 0.1  # SAN.NO_OBJECT_WEIGHT
    class_weight: float = 2.0  # SAN.CLASS_WEIGHT (loss and matching cost)
    dice_weight: float = 5.0  # SAN.DICE_WEIGHT
    mask_weight: float = 5.0  # SAN.MASK_WEIGHT
    train_num_points: int = 12544  # SAN.TRAIN_NUM_POINTS (112 * 112)
    oversample_ratio: float = 3.0  # SAN.OVERSAMPLE_RATIO
    importance_sample_ratio: float = 0.75  # SAN.IMPORTANCE_SAMPLE_RATIO

    # --- optimizer (train_net.py build_optimizer) ----------------------------------------------------
    lr: float = 1e-4  # SOLVER.BASE_LR
    side_adapter_lr_multiplier: float = 1.0  # SOLVER.BACKBONE_MULTIPLIER (1.0 in san_clip_vit_res4_coco.yaml)
    clip_lr_multiplier: float = 1.0  # SOLVER.CLIP_MULTIPLIER

    # --- inference --------------------------------------------------------------------------------------
    test_size: int = 640  # INPUT.MIN_SIZE_TEST: the shorter side is resized to this ...
    test_max_size: int = 2560  # ... the longer one to at most INPUT.MAX_SIZE_TEST

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an inconsistent config."""
        sizes = ("feature_last_layer", "size_divisibility", "side_width", "side_heads", "side_depth")
        sizes += ("side_patch", "side_image_size", "num_queries", "attn_bias_heads", "attn_bias_layers")
        sizes += ("embed_channels", "mlp_channels", "mlp_layers", "train_num_points", "test_size")
        for name in sizes:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {getattr(self, name)}")
        if self.side_width % self.side_heads:
            raise ValueError(
                f"side_width {self.side_width} is not a multiple of side_heads {self.side_heads}"
            )
        if not 0 < self.clip_resolution <= 1:
            raise ValueError(f"clip_resolution must be in (0, 1], got {self.clip_resolution}")
        if not self.deep_supervision or any(not 1 <= i <= self.side_depth for i in self.deep_supervision):
            raise ValueError(
                f"deep_supervision must name side blocks 1..{self.side_depth}, got {self.deep_supervision}"
            )
        pairs = self.fusion_pairs
        if any(clip > self.feature_last_layer or side > self.side_depth for clip, side in pairs):
            raise ValueError(
                f"fusion_map entries must read 'CLIP layer <= {self.feature_last_layer} -> side block <= "
                f"{self.side_depth}', got {self.fusion_map}"
            )
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ValueError("every prompt template must contain '{}' for the class name")
        for name in ("lr", "side_adapter_lr_multiplier", "clip_lr_multiplier", "oversample_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def fusion_pairs(self) -> tuple[tuple[int, int], ...]:
        """``fusion_map`` as (CLIP layer, side block) pairs."""
        pairs = []
        for entry in self.fusion_map:
            clip, arrow, side = entry.partition("->")
            if not arrow or not clip.strip().isdigit() or not side.strip().isdigit():
                raise ValueError(f"fusion_map entries look like '3->1', got {entry!r}")
            pairs.append((int(clip), int(side)))
        return tuple(pairs)


def san() -> SANConfig:
    """SAN with CLIP ViT-B/16 (``configs/san_clip_vit_res4_coco.yaml``; released ``san_vit_b_16.pth``)."""
    return SANConfig(preset="san")


def san_large() -> SANConfig:
    """SAN with CLIP ViT-L/14@336 (``configs/san_clip_vit_large_res4_coco.yaml``; released
    ``san_vit_large_14.pth``)."""
    return SANConfig(
        preset="san-large",
        clip="openai/clip-vit-large-patch14-336",  # SAN.CLIP_MODEL_NAME ViT-L-14-336
        clip_arch="clip-vit-l-14-336",
        clip_resolution=0.7,  # SAN.CLIP_RESOLUTION
        feature_last_layer=18,  # SAN.FEATURE_LAST_LAYER_IDX
        fusion_map=("0->0", "6->1", "12->2", "18->3"),  # SIDE.FUSION_MAP
        attn_bias_heads=16,  # SIDE.ATTN_BIAS.NUM_HEADS
    )


PRESETS = {"san": san, "san-large": san_large}
