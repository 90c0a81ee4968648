"""The typed configuration of a SED model, and its two presets.

Every default is the official one (xb534/SED: ``configs/convnextB_768.yaml`` over ``configs/config.yaml`` over
``add_sed_config`` of ``sed/config.py``, as ``train_net.py`` merges them; ``eval.sh`` for evaluation); the
comment names the official key. Official keys that change nothing in the released models are left out:
``NUM_LAYERS``, ``WINDOW_SIZES``, ``FEATURE_RESOLUTION``, ``APPEARANCE_GUIDANCE_DIM`` / ``_PROJ_DIM`` (their
modules are commented out of ``Aggregator``), ``PROMPT_DEPTH`` / ``PROMPT_LENGTH`` (OpenAI CLIP only),
``BACKBONE_MULTIPLIER`` (the backbone is deleted in ``SED.__init__``), ``TEST.SLIDING_WINDOW`` (``SED.forward``
sets it to False before reading it); and options the released configs do not take are not offered:
``TEXT_GUIDANCE_DIM`` > 0, ``ATTENTION_TYPE`` "full", ``CNEXT_TYPE`` "V2" / "Swin", ``CLIP_FINETUNE`` values other
than "full" and a frozen tower. Training-run settings (steps, batch, crop, schedule) are in
``configs/*/sed.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aeroseg.config import ConfigBase
from aeroseg.training_free.templates import OPENAI_IMAGENET_TEMPLATES

CLIP_PIXEL_MEAN = (122.7709383, 116.7460125, 104.09373615)  # add_sed_config MODEL.CLIP_PIXEL_MEAN (0..255)
CLIP_PIXEL_STD = (68.5005327, 66.6321579, 70.3231630)  # add_sed_config MODEL.CLIP_PIXEL_STD (0..255)


@dataclass
class SEDConfig(ConfigBase):
    """Configuration of :class:`aeroseg.sed.SED`; field names are used unchanged from here to the modules."""

    preset: str = "sed"  # name of the preset this config was built from (informational)

    # --- hierarchical encoder (CLIP ConvNeXt) and text --------------------------------------------------
    clip: str = "laion/CLIP-convnext_base_w_320-laion_aesthetic-s13B-b82K"  # SEM_SEG_HEAD.CLIP_PRETRAINED
    # "Convnext-B" -> open_clip ("convnext_base_w_320", "laion_aesthetic_s13b_b82k") (sed_predictor.py); a hub
    # id, a directory or an open_clip file
    clip_arch: str = (
        "clip-convnext-base-w-320"  # shipped architecture (pretrained=False; what shapes don't say)
    )
    clip_image_size: int = 768  # SED.clip_resolution (768, 768), hard-coded in sed_model.py
    pixel_mean: tuple[float, float, float] = CLIP_PIXEL_MEAN  # MODEL.CLIP_PIXEL_MEAN, 0..255 units
    pixel_std: tuple[float, float, float] = CLIP_PIXEL_STD  # MODEL.CLIP_PIXEL_STD, 0..255 units
    prompt_templates: tuple[str, ...] = OPENAI_IMAGENET_TEMPLATES  # MODEL.PROMPT_ENSEMBLE_TYPE "imagenet"
    clip_finetune: Literal["full", "frozen"] = "full"  # SEM_SEG_HEAD.CLIP_FINETUNE "full": every image-tower
    # tensor trains (the text tower never does); "frozen": what its other values do to a ConvNeXt tower

    # --- cost map ---------------------------------------------------------------------------------------
    hidden_dim: int = 128  # SEM_SEG_HEAD.HIDDEN_DIMS: the cost map embedding (Aggregator.conv1, 7×7)

    # --- gradual fusion decoder ---------------------------------------------------------------------------
    decoder_dims: tuple[int, int, int] = (64, 32, 16)  # SEM_SEG_HEAD.DECODER_DIMS
    decoder_guidance_dims: tuple[int, int, int] = (
        512,
        256,
        128,
    )  # SEM_SEG_HEAD.DECODER_GUIDANCE_DIMS: encoder
    # widths of res4, res3, res2 fused by the three stages
    decoder_guidance_proj_dims: tuple[int, int, int] = (32, 16, 8)  # SEM_SEG_HEAD.DECODER_GUIDANCE_PROJ_DIMS
    decoder_cost_dims: tuple[int, int, int] = (80, 32, 16)  # Aggregator(decoder_corr_guidance_dims) default:
    # inputs of the three cost map up-projections (the templates, then the previous projection's width)
    kernel_sizes: tuple[int, int, int] = (9, 9, 9)  # SEM_SEG_HEAD.KERNEL_SIZE: ConvNeXt block of each stage
    num_heads: int = 4  # SEM_SEG_HEAD.NUM_HEADS: linear attention over classes
    class_pool: tuple[int, int] = (2, 2)  # SEM_SEG_HEAD.POOLING_SIZES in training
    class_pool_eval: tuple[int, int] = (1, 1)  # eval.sh: MODEL.SEM_SEG_HEAD.POOLING_SIZES "[1,1]"

    # --- category early rejection ---------------------------------------------------------------------
    early_rejection: bool = False  # TEST.FAST_INFERENCE: decode only the classes the rejection heads keep
    early_rejection_topk: int = 1  # TEST.TOPK: a class is kept where it is among the top k of some pixel
    # (the README's fast version: TEST.TOPK 8)

    # --- inference protocol (test mapper) ------------------------------------------------------------------
    test_min_size: int = 640  # INPUT.MIN_SIZE_TEST: shorter side before the model
    test_max_size: int = 2560  # INPUT.MAX_SIZE_TEST (config.yaml): longer side at most

    # --- training ----------------------------------------------------------------------------------------
    lr: float = 2e-4  # SOLVER.BASE_LR
    clip_lr_multiplier: float = 0.01  # SOLVER.CLIP_MULTIPLIER: lr factor of every clip_model tensor
    ignore_index: int = 255  # SEM_SEG_HEAD.IGNORE_VALUE: pixels that are all-negative targets

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an inconsistent config."""
        for name in ("clip_image_size", "hidden_dim", "num_heads", "early_rejection_topk", "test_min_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {getattr(self, name)}")
        for name in (
            "decoder_dims",
            "decoder_guidance_dims",
            "decoder_guidance_proj_dims",
            "decoder_cost_dims",
        ):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be whole numbers >= 1, got {getattr(self, name)}")
        if min(self.kernel_sizes) < 1 or any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd whole numbers, got {self.kernel_sizes}")
        if min(self.class_pool + self.class_pool_eval) < 1:
            raise ValueError("class_pool and class_pool_eval must be whole numbers >= 1")
        widths = (self.hidden_dim, *self.decoder_dims)
        if any(w % self.num_heads for w in widths[:-1]):
            raise ValueError(
                f"hidden_dim and decoder_dims[:2] must be multiples of num_heads={self.num_heads}"
            )
        for w in self.decoder_dims:  # DoubleConv: GroupNorm(w // 16, w)
            if w < 16 or w % (w // 16):
                raise ValueError(f"decoder_dims must be >= 16 and divisible by their // 16 groups, got {w}")
        for i, (w, g) in enumerate(zip(widths[:3], self.decoder_guidance_proj_dims, strict=True)):
            if g >= w:
                raise ValueError(
                    f"decoder_guidance_proj_dims[{i}]={g} must be below the stage input width {w}"
                )
        chain = (len(self.prompt_templates), *self.decoder_guidance_proj_dims[:-1])
        if self.decoder_cost_dims != chain:
            raise ValueError(
                f"decoder_cost_dims must be (number of templates, decoder_guidance_proj_dims[:2]) = {chain}, "
                f"got {self.decoder_cost_dims}"
            )
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ValueError("every prompt template must contain '{}' for the class name")
        if self.test_max_size < self.test_min_size:
            raise ValueError("test_max_size must be >= test_min_size")
        if self.lr <= 0 or self.clip_lr_multiplier < 0:
            raise ValueError("lr must be > 0 and clip_lr_multiplier >= 0")


def sed(**overrides: object) -> SEDConfig:
    """SED with CLIP ConvNeXt-B (``configs/convnextB_768.yaml``): the paper's Table 2 model."""
    return SEDConfig().replace(**overrides)


def sed_large(**overrides: object) -> SEDConfig:
    """SED with CLIP ConvNeXt-L (``configs/convnextL_768.yaml``), the other released model."""
    return SEDConfig(
        preset="sed-large",
        clip="laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup",  # "Convnext-L" (sed_predictor.py)
        clip_arch="clip-convnext-large-d-320",
        decoder_guidance_dims=(768, 384, 192),  # convnextL_768.yaml DECODER_GUIDANCE_DIMS
    ).replace(**overrides)


PRESETS = {"sed": sed, "sed-large": sed_large}
