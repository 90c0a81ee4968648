"""The one typed configuration of the training-free segmenter (preset ``training-free``).

Every step of the pipeline is a field below, with its default and the work the idea comes from. Defaults
follow SegEarth-OV (Li et al. 2024, arXiv 2410.01768, ``configs/base_config.py``) where it gives one;
the others are this project's choices, marked **choice**. Nothing here is learned: the CLIP and SAM
weights are the public ones and no parameter is trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aeroseg.config import REMOTE_SENSING_TEMPLATES, ConfigBase

Attention = Literal["qq+kk+vv", "qq+kk", "qq", "kk", "vv", "identity"]
GuidanceType = Literal["sam", "sam2", "none"]

DEFAULT_CLIP = "openai/clip-vit-base-patch16"
DEFAULT_GUIDANCE = "facebook/sam-vit-base"


@dataclass
class TrainingFreeConfig(ConfigBase):
    """Configuration of :class:`aeroseg.training_free.TrainingFreeSegmenter`; names are used unchanged."""

    preset: str = "training-free"  # name recorded by evaluation and reports (informational)

    # --- 1. Dense CLIP features ----------------------------------------------------------------------
    clip: str = DEFAULT_CLIP  # hub id, local transformers directory, or original .pt/.bin/.safetensors
    clip_arch: str = "clip-vit-b-16"  # shipped architecture for pretrained=False and original files
    clip_image_size: int = 448  # SegEarth-OV: images resized to 448 before the sliding crops
    clip_crop: int = 224  # SegEarth-OV / SCLIP slide_crop: CLIP runs on crops of its pre-training size;
    #                       0 runs one pass over the whole clip_image_size input
    clip_stride: int = 112  # SegEarth-OV slide_stride between crops (pixels of the resized input)
    rotations: tuple[int, ...] = (0,)  # **choice**: test-time rotations (degrees, multiples of 90), averaged
    last_block_attention: Attention = "qq+kk+vv"  # last block's attention without query-key mixing:
    #   "qq+kk+vv" SegEarth-OV, "qq+kk" SCLIP (arXiv 2312.01597), "qq" ClearCLIP (arXiv 2407.12442),
    #   "kk" NACLIP's key-key (arXiv 2404.08181, without its Gaussian window), "vv" CLIP Surgery's v-v
    #   (arXiv 2304.05653), "identity" MaskCLIP's value embedding (arXiv 2112.01071)
    last_block_residual: bool = False  # ClearCLIP: the last block keeps neither residual nor FFN
    cls_bias: float = 0.3  # SegEarth-OV global bias alleviation (cls_token_lambda = -0.3):
    #                        score = cos(patch, text) - cls_bias * cos([CLS], text)

    # --- 2. Text and class scores --------------------------------------------------------------------
    prompt_templates: tuple[str, ...] = REMOTE_SENSING_TEMPLATES  # prompt ensemble: mean of the
    #                                     normalised template embeddings, re-normalised (CLIP, Radford 2021)
    logit_scale: float = 50.0  # SegEarth-OV: softmax over the classes of logit_scale * score
    background_names: tuple[str, ...] = ("background",)  # class names (any case) that are background
    background_threshold: float = 0.0  # SegEarth-OV prob_thd (0.4 iSAID, 0.1 OpenEarthMap): where the
    #   best non-background probability is below it, the background classes get 1 - that probability

    # --- 3. SAM regions (optional) -------------------------------------------------------------------
    guidance_type: GuidanceType = "sam"  # "sam", "sam2" or "none" (no SAM: CLIP scores only)
    guidance: str | None = DEFAULT_GUIDANCE  # hub id, directory or original file of the SAM / SAM2 model;
    #                                        "none" runs without SAM (guidance_type "none")
    guidance_arch: str | None = "sam-vit-b"  # shipped architecture for pretrained=False
    guidance_image_size: int | None = None  # SAM input side; None = the encoder's own (1024)
    region_clusters: int = 24  # **choice**: k-means clusters of SAM's final features per image
    region_iterations: int = 10  # **choice**: Lloyd iterations of the (cosine) k-means
    region_mix: float = 0.5  # **choice**: score = (1 - mix) * score + mix * mean score of its cluster

    # --- 4. Edge-aware upsampling to the image -------------------------------------------------------
    upsampler: Literal["joint_bilateral", "bilinear"] = "joint_bilateral"  # Kopf et al. 2007, training-
    #   free stand-in for SegEarth-OV's trained SimFeatUp (a learned joint bilateral upsampler)
    jbu_radius: int = 2  # **choice**: each pixel blends the (2 * radius)² nearest low-resolution cells
    jbu_sigma_spatial: float = 1.0  # **choice**: spatial Gaussian, in low-resolution cells
    jbu_sigma_range: float = 0.15  # **choice**: colour Gaussian, RGB distance of [0, 1] values

    def __post_init__(self) -> None:
        if isinstance(self.guidance, str) and self.guidance.lower() == "none":  # --guidance none: no SAM
            self.guidance, self.guidance_type = None, "none"
        super().__post_init__()

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an inconsistent config."""
        if not self.rotations or any(r % 90 for r in self.rotations):
            raise ValueError(f"rotations must be multiples of 90 degrees, got {self.rotations}")
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ValueError("every prompt template must contain '{}' for the class name")
        if self.clip_crop < 0 or self.clip_crop > self.clip_image_size or self.clip_stride < 1:
            raise ValueError("clip_crop must be in [0, clip_image_size] and clip_stride >= 1")
        if self.last_block_attention not in ("qq+kk+vv", "qq+kk", "qq", "kk", "vv", "identity"):
            raise ValueError(f"unknown last_block_attention {self.last_block_attention!r}")
        if self.guidance_type not in ("sam", "sam2", "none"):
            raise ValueError(f"guidance_type must be 'sam', 'sam2' or 'none', got {self.guidance_type!r}")
        if self.guidance_type != "none" and not (self.guidance or self.guidance_arch):
            raise ValueError(f"guidance_type={self.guidance_type!r} needs guidance (a hub id, dir or file)")
        if not 0 <= self.background_threshold <= 0.5:
            raise ValueError(f"background_threshold must be in [0, 0.5], got {self.background_threshold}")
        if not 0 <= self.region_mix <= 1 or self.region_clusters < 1 or self.region_iterations < 0:
            raise ValueError("region_mix must be in [0, 1], region_clusters >= 1, region_iterations >= 0")
        if self.upsampler not in ("joint_bilateral", "bilinear"):
            raise ValueError(f"upsampler must be 'joint_bilateral' or 'bilinear', got {self.upsampler!r}")
        if self.jbu_radius < 1 or self.jbu_sigma_spatial <= 0 or self.jbu_sigma_range <= 0:
            raise ValueError("jbu_radius must be >= 1 and the JBU sigmas > 0")
        if self.logit_scale <= 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")


def training_free() -> TrainingFreeConfig:
    """Training-free open-vocabulary segmentation (SegEarth-OV family): public CLIP ViT-B/16 + SAM ViT-B."""
    return TrainingFreeConfig()


__all__ = ["DEFAULT_CLIP", "DEFAULT_GUIDANCE", "TrainingFreeConfig", "training_free"]
