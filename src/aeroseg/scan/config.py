"""The typed configuration of SCAN (Liu et al., CVPR 2024, ``yongliu20/SCAN``), presets ``scan`` and
``scan-large``.

Every default is the official value: ``scan/config.py`` (``add_ovseg_config``) overridden by
``configs/scan_vitB.yaml`` (Swin-B + CLIP ViT-B/16, the paper's Table 2 model) or ``configs/scan_vitL.yaml``
(the released ViT-L/14 model); each comment names its key (``SWIN.`` = ``MODEL.SWIN.``, ``HEAD.`` =
``MODEL.SEM_SEG_HEAD.``, ``M2F.`` = ``MODEL.MASK_FORMER.``, ``ADAPTER.`` = ``MODEL.CLIP_ADAPTER.``) or, for
the constants written into SCAN's code, its file. Official settings with the one value this code implements:
``BACKBONE.NAME`` D2SwinTransformer (``SWIN.APE`` False, ``PATCH_NORM`` True, ``QKV_BIAS`` True,
``QK_SCALE`` None, ``DROP_RATE`` / ``ATTN_DROP_RATE`` 0, all four stages out), ``HEAD.PIXEL_DECODER_NAME``
MSDeformAttnPixelDecoder on res3-res5 (``DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS`` 4, 3 levels: what
``transformers``' ``Mask2FormerPixelDecoder`` builds), ``HEAD.NORM`` GN, ``M2F.DROPOUT`` 0,
``ADAPTER.MASK_MATTING`` False, ``ADAPTER.REGION_RESIZED`` True, ``HEAD.NUM_CLASSES`` (here: the length of the
class list). ``MODEL.CLIP_VISION_DIM`` and ``MODEL.PATCH_SIZE`` (the CLIP width and token grid) are read from
the CLIP itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aeroseg.config import ConfigBase
from aeroseg.mask_classification.templates import VILD_TEMPLATES


@dataclass
class SCANConfig(ConfigBase):
    """Configuration of :class:`aeroseg.scan.SCAN`; field names are used unchanged down to the modules."""

    preset: str = "scan"  # name of the preset this config was built from (informational)

    # --- Swin backbone ----------------------------------------------------------------------------------
    swin: str = "microsoft/swin-base-patch4-window12-384-in22k"  # MODEL.WEIGHTS
    #   swin_base_patch4_window12_384_22k.pkl (detectron2's copy of Microsoft's release): the same weights as a
    #   transformers hub id or directory, or Microsoft's original .pth
    swin_embed_dim: int = 128  # SWIN.EMBED_DIM
    swin_depths: tuple[int, ...] = (2, 2, 18, 2)  # SWIN.DEPTHS
    swin_heads: tuple[int, ...] = (4, 8, 16, 32)  # SWIN.NUM_HEADS
    swin_window: int = 12  # SWIN.WINDOW_SIZE
    swin_patch: int = 4  # SWIN.PATCH_SIZE
    swin_mlp_ratio: float = 4.0  # SWIN.MLP_RATIO
    swin_drop_path: float = 0.3  # SWIN.DROP_PATH_RATE (stochastic depth, linear over the blocks)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # MODEL.PIXEL_MEAN (0..255 images)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)  # MODEL.PIXEL_STD
    size_divisibility: int = 32  # M2F.SIZE_DIVISIBILITY: zero padding (after normalisation) to a multiple

    # --- pixel decoder (Mask2Former MSDeformAttnPixelDecoder) --------------------------------------------
    conv_dim: int = 256  # HEAD.CONVS_DIM
    mask_dim: int = 256  # HEAD.MASK_DIM
    encoder_layers: int = 6  # HEAD.TRANSFORMER_ENC_LAYERS: deformable-attention encoder layers
    encoder_feedforward: int = 1024  # msdeformattn.py from_config: 1024 "for deformable transformer encoder"
    common_stride: int = 4  # HEAD.COMMON_STRIDE: FPN levels below the encoder's down to this stride

    # --- transformer decoder (Mask2Former masked attention, SCAN's open-vocabulary predictor) -----------
    hidden_dim: int = 256  # M2F.HIDDEN_DIM
    num_queries: int = 100  # M2F.NUM_OBJECT_QUERIES (SCAN's ovseg_model.py assumes 100)
    num_heads: int = 8  # M2F.NHEADS (the decoder's and the pixel decoder's encoder's heads)
    dim_feedforward: int = 2048  # M2F.DIM_FEEDFORWARD
    decoder_layers: int = 10  # M2F.DEC_LAYERS, used unchanged by OpenVocabMask2FormerPredictor: 10 layers,
    #   11 predictions (Mask2Former's own decoder subtracts one)
    pre_norm: bool = False  # M2F.PRE_NORM
    enforce_input_proj: bool = False  # M2F.ENFORCE_INPUT_PROJ
    embedding_dim: int = 512  # HEAD.EMBEDDING_DIM: the class head's output (a CLIP-space embedding)
    embed_hidden_dim: int = 1024  # HEAD.EMBED_HIDDEN_DIM
    embed_layers: int = 2  # HEAD.EMBED_LAYERS

    # --- CLIP and the semantic integration --------------------------------------------------------------
    clip: str = "laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K"  # ADAPTER.CLIP_MODEL_NAME ViT-B-16 with
    #   open_clip's datacomp_xl_s13b_b90k weights (adapter.py): hub id, transformers directory or open_clip file
    clip_arch: str = "clip-vit-b-16"  # shipped architecture for pretrained=False
    clip_activation: Literal["quick_gelu", "gelu"] = "gelu"  # open_clip's ViT-B-16 config: nn.GELU
    clip_image_size: int = 224  # ovseg_model.py / adapter.py: the whole image and every region at 224²
    clip_layers: tuple[int, ...] = (6, 9, 12)  # MODEL.SELECT_ORI_CLIP_ID: CLIP layers whose tokens are fused
    frequency_sigma: tuple[float, ...] = (9.0, 7.0, 3.0)  # MODEL.FREQUENCY_SIGMA, one per clip_layers entry
    scan_dim: int = 512  # MODEL.SCAN_DIM: width of the fusion (= embedding_dim = the CLIP embedding)
    fusion_layers: int = 5  # ovseg_model.py: CA(num=5) cross-attention layers onto the CLIP tokens
    integration_layers: int = 5  # ovseg_model.py: nn.TransformerEncoder(num_layers=5) ...
    integration_heads: int = 8  # ... of nhead=8 (CA's MultiheadAttention too) ...
    integration_feedforward: int = 2048  # ... with torch's default dim_feedforward ...
    integration_dropout: float = 0.1  # ... and dropout
    prompt_templates: tuple[str, ...] = VILD_TEMPLATES  # ADAPTER.TEXT_TEMPLATES vild
    temperature: float = 100.0  # adapter.py get_sim_logits: cosine similarities times 100

    # --- mask-region CLIP ensemble and the contextual shift (inference) ---------------------------------
    clip_ensemble: bool = True  # ADAPTER.CLIP_ENSEMBLE
    ensemble_weight: float = 0.7  # ADAPTER.CLIP_ENSEMBLE_WEIGHT: p_in^(1-w) · p_region^w
    mask_threshold: float = 0.4  # ADAPTER.MASK_THR: region = pixels with mask probability above
    mask_fill: Literal["mean", "zero"] = "mean"  # ADAPTER.MASK_FILL: outside the mask, CLIP's mean colour
    mask_expand_ratio: float = 1.0  # ADAPTER.MASK_EXPAND_RATIO of the region's bounding box
    replace_ratio: float = 0.15  # ADAPTER.REPLACE_RATIO: share of background tokens replaced ...
    replace_layers: tuple[int, ...] = (1, 3, 5)  # ADAPTER.REPLACE_LAYER: ... after these CLIP layers
    shift_seed: int | None = 0  # **choice**: seeds the tokens drawn per encode call (Python's random);
    #   None = the global random module, as the official (unseeded: runs differ)

    # --- inference ----------------------------------------------------------------------------------------
    test_size: int = 640  # INPUT.MIN_SIZE_TEST: the shorter side is resized to this ...
    test_max_size: int = 2560  # ... the longer one to at most INPUT.MAX_SIZE_TEST

    # --- criterion (Mask2Former's) ----------------------------------------------------------------------
    no_object_weight: float = 0.1  # M2F.NO_OBJECT_WEIGHT
    class_weight: float = 2.0  # M2F.CLASS_WEIGHT (loss and matching cost)
    mask_weight: float = 5.0  # M2F.MASK_WEIGHT
    dice_weight: float = 5.0  # M2F.DICE_WEIGHT
    train_num_points: int = 12544  # M2F.TRAIN_NUM_POINTS (112 * 112)
    oversample_ratio: float = 3.0  # M2F.OVERSAMPLE_RATIO
    importance_sample_ratio: float = 0.75  # M2F.IMPORTANCE_SAMPLE_RATIO
    deep_supervision: bool = True  # M2F.DEEP_SUPERVISION: the first DEC_LAYERS - 1 auxiliary predictions too

    # --- optimizer (train_net.py build_optimizer) -------------------------------------------------------
    lr: float = 6e-5  # SOLVER.BASE_LR
    backbone_lr_multiplier: float = 1.0  # SOLVER.BACKBONE_MULTIPLIER (1.0 in scan_vitB.yaml)

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an inconsistent config."""
        sizes = ("swin_embed_dim", "swin_window", "swin_patch", "size_divisibility", "conv_dim", "mask_dim")
        sizes += ("encoder_feedforward", "common_stride", "hidden_dim", "num_queries", "num_heads")
        sizes += ("dim_feedforward", "decoder_layers", "embedding_dim", "embed_hidden_dim", "embed_layers")
        sizes += ("clip_image_size", "scan_dim", "fusion_layers", "integration_layers", "integration_heads")
        sizes += ("integration_feedforward", "train_num_points", "test_size", "test_max_size")
        for name in sizes:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {getattr(self, name)}")
        if (
            len(self.swin_depths) != 4
            or len(self.swin_heads) != 4
            or min(self.swin_depths + self.swin_heads) < 1
        ):
            raise ValueError("swin_depths and swin_heads must be 4 whole numbers >= 1 (the four Swin stages)")
        if self.scan_dim != self.embedding_dim:
            raise ValueError(f"scan_dim {self.scan_dim} must equal embedding_dim {self.embedding_dim}")
        if self.scan_dim % self.integration_heads:
            raise ValueError(f"scan_dim {self.scan_dim} is not a multiple of integration_heads")
        if (
            not self.clip_layers
            or len(self.frequency_sigma) != len(self.clip_layers)
            or min(self.clip_layers) < 1
        ):
            raise ValueError("clip_layers must be CLIP layers >= 1, one frequency_sigma for each")
        if min(self.replace_layers, default=1) < 1:
            raise ValueError(f"replace_layers must be CLIP layers >= 1, got {self.replace_layers}")
        for name in ("ensemble_weight", "mask_threshold", "replace_ratio", "integration_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.swin_drop_path < 1:
            raise ValueError(f"swin_drop_path must be in [0, 1), got {self.swin_drop_path}")
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ValueError("every prompt template must contain '{}' for the class name")
        for name in ("lr", "backbone_lr_multiplier", "temperature", "mask_expand_ratio", "oversample_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def scan() -> SCANConfig:
    """SCAN with Swin-B and CLIP ViT-B/16 (``configs/scan_vitB.yaml``), the paper's Table 2 model."""
    return SCANConfig(preset="scan")


def scan_large() -> SCANConfig:
    """SCAN with Swin-B and CLIP ViT-L/14 (``configs/scan_vitL.yaml``; the released ``SCAN.pth``)."""
    return SCANConfig(
        preset="scan-large",
        clip="laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",  # ADAPTER.CLIP_MODEL_NAME ViT-L-14
        clip_arch="clip-vit-l-14",
        clip_layers=(12, 18, 24),  # MODEL.SELECT_ORI_CLIP_ID
        scan_dim=768,  # MODEL.SCAN_DIM
        embedding_dim=768,  # HEAD.EMBEDDING_DIM
        replace_layers=(1, 3, 5, 7, 9),  # ADAPTER.REPLACE_LAYER
    )


PRESETS = {"scan": scan, "scan-large": scan_large}
