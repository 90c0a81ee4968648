"""The configurations of the SegEarth-OV presets (``segearth-ov``, ``segearth-ov3``), kept apart from their
models so that listing presets or parsing the command line imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from aeroseg.config import ConfigBase
from aeroseg.training_free.config import DEFAULT_CLIP
from aeroseg.training_free.templates import OPENAI_IMAGENET_TEMPLATES

SIMFEATUP_URL = (
    "https://github.com/likyoo/SegEarth-OV/raw/main/simfeatup_dev/weights/xclip_jbu_one_million_aid.ckpt"
)
"""Where SegEarth-OV's configs point (``xclip_jbu_one_million_aid.ckpt``, the ``jbu_one`` upsampler trained
on Million-AID), in its GitHub repository; downloaded once into the aeroseg cache."""

DEFAULT_SAM3 = "facebook/sam3"


@dataclass
class SegEarthOVConfig(ConfigBase):
    """Configuration of :class:`SegEarthOV`; every default is the official one (``base_config.py``)."""

    preset: str = "segearth-ov"  # name recorded by evaluation and reports (informational)
    clip: str = DEFAULT_CLIP  # OpenAI CLIP ViT-B/16 (the official open_clip 'openai' weights)
    clip_arch: str = "clip-vit-b-16"  # shipped architecture for pretrained=False and original files
    clip_activation: str = "quick_gelu"  # the official model is open_clip's 'openai' ViT-B/16 (QuickGELU);
    #                                      "auto" = what the weights' file says, "gelu" for GELU-trained weights
    simfeatup: str | None = (
        SIMFEATUP_URL  # .ckpt path, https URL or hf://OWNER/REPO/PATH; None ("none") = bilinear
    )
    #                                        logits instead (official feature_up=False)
    simfeatup_kind: str = "jbu_one"  # architecture for pretrained=False (a checkpoint names its own)
    image_size: int = 448  # test pipeline Resize(scale=(448, 448), keep_ratio=True): longer side 448
    slide_crop: int = 224  # crops of CLIP's pre-training size
    slide_stride: int = 112
    cls_token_lambda: float = -0.3  # logits += λ · cos([CLS], class): global bias alleviation
    logit_scale: float = 50.0
    prompt_templates: tuple[str, ...] = OPENAI_IMAGENET_TEMPLATES  # openai_imagenet_template
    background_names: tuple[str, ...] = ("background",)  # class names (any case) that are background
    background_threshold: float = 0.0  # prob_thd: 0.4 iSAID, 0.1 OpenEarthMap (per-dataset configs)

    def __post_init__(self) -> None:
        if isinstance(self.simfeatup, str) and self.simfeatup.lower() == "none":  # --simfeatup none
            self.simfeatup = None
        super().__post_init__()

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an inconsistent config."""
        if self.slide_crop < 1 or self.slide_stride < 1 or self.image_size < 0:
            raise ValueError("slide_crop and slide_stride must be >= 1, image_size >= 0 (0: no resize)")
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ValueError("every prompt template must contain '{}' for the class name")
        if not 0 <= self.background_threshold <= 0.5:
            raise ValueError(f"background_threshold must be in [0, 0.5], got {self.background_threshold}")
        if self.logit_scale <= 0:
            raise ValueError(f"logit_scale must be > 0, got {self.logit_scale}")
        if self.clip_activation not in ("auto", "quick_gelu", "gelu"):
            raise ValueError(
                f"clip_activation must be 'auto', 'quick_gelu' or 'gelu', got {self.clip_activation!r}"
            )


def segearth_ov() -> SegEarthOVConfig:
    """SegEarth-OV (CLIP ViT-B/16 + SimFeatUp), the official settings."""
    return SegEarthOVConfig()


@dataclass
class SegEarthOV3Config(ConfigBase):
    """Configuration of :class:`SegEarthOV3`; defaults are the official ones (``SegEarthOV3Segmentation``),
    the per-dataset values are in ``configs/<dataset>/segearth-ov3.yaml``."""

    preset: str = "segearth-ov3"  # name recorded by evaluation and reports (informational)
    sam3: str = DEFAULT_SAM3  # hub id (gated: SAM License) or local transformers directory
    sam3_arch: str = "sam3"  # shipped architecture for pretrained=False
    image_size: int | None = None  # every crop is resized to image_size²; None = SAM 3's own (Sam3Processor:
    #                                1008)
    slide_crop: int = 0  # crop side in pixels of the input; 0 = the whole input in one view
    slide_stride: int = 0  # stride between crops (OpenEarthMap: 512 / 512)
    confidence_threshold: float = 0.5  # an instance is kept when object score × presence exceeds it
    use_transformer_decoder: bool = True  # fuse the instance masks
    use_sem_seg: bool = True  # fuse the semantic head
    use_presence_score: bool = True  # multiply every class map by its presence score
    background_names: tuple[str, ...] = ("background",)  # class names (any case) that are background
    background_threshold: float = 0.0  # prob_thd: background where no class reaches it (iSAID 0.5)

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an inconsistent config."""
        if (
            (self.image_size is not None and self.image_size < 1)
            or self.slide_crop < 0
            or self.slide_stride < 0
        ):
            raise ValueError("image_size must be >= 1, slide_crop and slide_stride >= 0")
        if self.slide_crop and not self.slide_stride:
            raise ValueError("slide_crop needs slide_stride >= 1")
        if not 0 <= self.confidence_threshold <= 1 or not 0 <= self.background_threshold <= 1:
            raise ValueError("confidence_threshold and background_threshold must be in [0, 1]")
        if not (self.use_transformer_decoder or self.use_sem_seg):
            raise ValueError("use_transformer_decoder or use_sem_seg must be on: no head gives a mask")


def segearth_ov3() -> SegEarthOV3Config:
    """SegEarth-OV3: SAM 3 alone, its instance and semantic heads fused, gated by its presence score."""
    return SegEarthOV3Config()
