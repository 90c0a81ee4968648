"""The one typed configuration of an AerOSeg model.

Every default below is the paper's value where the paper gives one, and otherwise the reference code's or
our reading, as ``docs/model.md`` labels each (marked **choice** in the comments). The config travels inside
every checkpoint (``config.json``), so a model is rebuilt from its checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

CONFIG_NAME = "config.json"  # every checkpoint folder: {"format": <family format>, "config": {...}, ...}
WEIGHTS_NAME = "model.safetensors"  # ... beside its tensors

REMOTE_SENSING_TEMPLATES: tuple[str, ...] = (
    "A satellite image of a {}",
    "A land use image of a {}",
    "A remote sensing image of a {}",
    "An aerial image of a {}",
)
"""The paper's remote-sensing prompt templates (Sec. 3.1, after RS-CLIP)."""

GENERIC_TEMPLATES: tuple[str, ...] = ("A photo of a {} in the scene",)
"""The generic prompt of CAT-Seg and OVRS (Baseline, Config-A, Config-B): their ``PROMPT_ENSEMBLE_TYPE:
single`` template, word for word."""

GuidanceType = Literal["sam", "sam2", "sam3", "clip"]
C = TypeVar("C", bound="ConfigBase")


class ConfigBase:
    """Dict round-trip, validated copies and list→tuple coercion shared by the dataclass configs."""

    def __post_init__(self) -> None:
        # JSON and YAML give lists; the config keeps tuples so that it stays hashable and comparable.
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self.check_types()
        self.validate()

    def check_types(self) -> None:
        """Raise ``ValueError`` naming the field and its allowed values for a value of the wrong type."""
        hints = get_type_hints(type(self), vars(sys.modules[type(self).__module__]))
        for f in fields(self):  # type: ignore[arg-type]
            value, hint = getattr(self, f.name), hints[f.name]
            if not _matches(value, hint):
                allowed = _ALLOWED.get(f.name) or _describe(hint)
                raise ValueError(f"{f.name} must be {allowed}, got {value!r}")

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an inconsistent config."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self: C, **overrides: Any) -> C:
        """A copy with ``overrides`` applied; unknown names raise ``ValueError``."""
        return type(self).from_dict({**self.to_dict(), **overrides})


_ALLOWED = {"rotations": "a list of multiples of 90 degrees (e.g. [0, 90, 180, 270])"}


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the type ``hint`` (the types the config dataclasses use)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args, strict=True))
    return True  # other annotations (dicts of anything) are not checked here


def _describe(hint: Any) -> str:
    """The allowed values of a type hint, in words: "one of 'sam', 'sam2'", "a list of 2 integers"."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"  # noqa: E501
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


@dataclass
class AerOSegConfig(ConfigBase):
    """Configuration of :class:`aeroseg.AerOSeg`. Field names are used unchanged from here to the modules."""

    preset: str = "aeroseg"  # name of the preset this config was built from (informational)

    # --- 1. Vision-language backbone (CLIP) --------------------------------------------------------
    clip: str = "openai/clip-vit-base-patch16"  # hub id, local directory, or original .pt/.bin/.safetensors
    clip_arch: str = "clip-vit-b-16"  # shipped architecture used with pretrained=False and for original files
    clip_activation: Literal["auto", "quick_gelu", "gelu"] = "auto"  # MLP activation of an original CLIP
    # file: "auto" reads it from the file (OpenAI and *-quickgelu open_clip: QuickGELU, other open_clip: GELU)
    clip_image_size: int = 384  # CLIP input side (384 for ViT-B/16, 336 for ViT-L/14): grid = size / patch
    rotations: tuple[int, ...] = (0, 90, 180, 270)  # degrees; one CLIP batch of B*R, rotated back (Eq. 1)
    prompt_templates: tuple[str, ...] = REMOTE_SENSING_TEMPLATES  # P templates, "{}" is the class name
    dense_last_block: bool = True  # CAT-Seg dense features: last block without attention mixing
    clip_trainable: tuple[str, ...] = ("q_proj", "v_proj")  # CLIP modules that train (image and text)
    clip_lr: float = 2e-6  # **choice** (CAT-Seg): lr of the CLIP q/v projections

    # --- 2. Guidance encoder ------------------------------------------------------------------------
    guidance_type: GuidanceType = "sam"  # "sam" (ViT), "sam2" (Hiera FPN) or "clip" (Baseline)
    guidance: str | None = "facebook/sam-vit-large"  # hub id, directory or original file; None for "clip"
    guidance_arch: str | None = "sam-vit-l"  # shipped architecture (pretrained=False, original files)
    guidance_image_size: int | None = None  # SAM / SAM2 input side; None = the encoder's own (1024)
    guidance_layers: tuple[int, int] = (8, 16)  # 1-based ViT blocks feeding decoder stages 1 and 2
    sam_final: Literal["neck", "last_block"] = "neck"  # **choice**: final feature = neck (256 ch)
    clip_guidance_dims: tuple[int, int] | None = (256, 128)  # guidance_type "clip": CAT-Seg's learned
    # upsamplers (ConvTranspose ×2 and ×4) of the two CLIP blocks to these widths; None = raw blocks
    clip_guidance_normalized: bool = False  # "clip": spatial refinement sees the raw dense CLIP features
    # (CAT-Seg); True = L2-normalised ones, which our first version used
    guidance_trainable: bool = False  # fine-tune the guidance encoder (paper Table 4)
    guidance_attention: Literal["sdpa", "flex", "eager"] = "sdpa"  # SAM ViT attention kernel (same results)
    guidance_lr: float = 2e-6  # lr of the guidance encoder when it trains (**choice**)
    guidance_resize: Literal["antialias", "area", "bilinear"] = "antialias"  # shrinking maps to the grids

    # --- 3. Correlation features ----------------------------------------------------------------------
    hidden_dim: int = 128  # d, the aggregation width
    correlation_kernel: int = 7  # Conv(R*P -> d, k x k) applied per class (Eq. 4)

    # --- 4. Correlation feature refinement ------------------------------------------------------------
    refinement_layers: int = 2  # spatial + class refinement pairs
    window_size: int = 12  # Swin window on the correlation grid (shift = window // 2)
    spatial_heads: int = 4
    class_heads: int = 4
    mlp_ratio: float = 4.0
    guidance_proj_dim: int = 128  # width of proj(guidance) concatenated into query and key (Eq. 5)
    text_proj_dim: int = 128  # width of proj(text) concatenated into query and key (Eq. 6)
    class_pool: int = 2  # CAT-Seg average-pools the grid for class attention in training (POOLING_SIZES)
    class_pool_eval: int = 1  # ... and evaluates without pooling (its eval.sh: POOLING_SIZES [1,1])
    class_pad_length: int = 256  # CAT-Seg pad_len: learned padding tokens (and guidance) bring the class
    # axis to this length; more classes pad to the next multiple (CAT-Seg keeps its top 256); 0 disables
    class_residual: Literal["reference", "update"] = "reference"  # "reference": CAT-Seg's
    # x + up(x_pool + attn + mlp); "update": x + up(attn + mlp), which our first version used
    class_align_corners: bool = True  # CAT-Seg upsamples the pooled class update with align_corners=True
    class_attention_proj: bool = False  # an output projection after the linear attention (CAT-Seg: none)
    spatial_position_bias: bool = False  # Swin relative-position bias (CAT-Seg's guided Swin: none)
    shared_guidance_norm: bool = True  # one guidance LayerNorm for the two Swin blocks of a layer (CAT-Seg)

    # --- 5. Semantic back-projection ------------------------------------------------------------------
    back_projection: bool = True  # reconstruct the target from the refined features (Eq. 7)
    back_projection_classes: int = 9  # T of its input (the training set's seen classes: iSAID 9)
    back_projection_hidden: int = 256  # **choice**: width of the two hidden linear layers
    reconstruction_target: Literal["sam", "clip", "rgb"] = "sam"  # paper Table 5
    back_projection_loss: Literal["l1", "l2", "cosine"] = "l1"  # **choice** (CLIP-RC)
    back_projection_weight: float = 1.0  # lambda of Eq. 14 (**choice**)

    # --- 6. Attention-aware upsampling decoder ------------------------------------------------------
    decoder_dims: tuple[int, int] = (64, 32)  # output widths of the two stages
    decoder_guidance_dims: tuple[int, int] = (32, 16)  # g: guidance widths of the two stages
    decoder_attention: bool = True  # channel + spatial attention gating (OVRS); False = CAT-Seg decoder
    decoder_attention_activation: Literal["none", "sigmoid"] = (
        "none"  # **choice**: gate as in docs/model.md §7
    )
    decoder_fuse_bias: bool = False  # bias in the two fusing Conv3×3 of a stage (CAT-Seg/OVRS: none)

    # --- 7. Training ---------------------------------------------------------------------------------
    lr: float = 2e-4  # lr of the new modules
    ignore_as_negative: bool = True  # ignore pixels are all-negative BCE targets (CAT-Seg cat_seg_model.py);
    # False excludes them from the mean

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an inconsistent config."""
        if not self.rotations or any(r % 90 for r in self.rotations):
            raise ValueError(
                f"rotations must be a list of multiples of 90 degrees (e.g. [0, 90, 180, 270]), got {self.rotations}"
            )
        for name in _POSITIVE:
            value = getattr(self, name)
            if any(v < 1 for v in (value if isinstance(value, tuple) else (value,)) if v is not None):
                what = "whole numbers >= 1" if isinstance(value, tuple) else "a whole number >= 1"
                raise ValueError(f"{name} must be {what}, got {value}")
        for name in ("clip_lr", "guidance_lr", "lr", "mlp_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if len(self.guidance_layers) != 2 or min(self.guidance_layers) < 1:
            raise ValueError(f"guidance_layers must be two block numbers >= 1, got {self.guidance_layers}")
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ValueError("every prompt template must contain '{}' for the class name")
        if self.guidance_type not in ("sam", "sam2", "sam3", "clip"):
            raise ValueError(
                f"guidance_type must be 'sam', 'sam2', 'sam3' or 'clip', got {self.guidance_type!r}"
            )
        if self.guidance_type != "clip" and not (self.guidance or self.guidance_arch):
            raise ValueError(f"guidance_type={self.guidance_type!r} needs guidance (a hub id, dir or file)")
        if self.guidance_attention not in ("sdpa", "flex", "eager"):
            raise ValueError(
                f"guidance_attention must be 'sdpa', 'flex' or 'eager', got {self.guidance_attention!r}"
            )
        if self.reconstruction_target == "sam" and self.back_projection and self.guidance_type == "clip":
            raise ValueError("reconstruction_target='sam' needs SAM guidance; use 'clip' or 'rgb'")
        if self.guidance_resize not in ("antialias", "area", "bilinear"):
            raise ValueError(
                f"guidance_resize must be antialias, area or bilinear, got {self.guidance_resize!r}"
            )
        if min(self.window_size, self.class_pool, self.class_pool_eval, self.refinement_layers) < 1:
            raise ValueError("window_size, class_pool, class_pool_eval and refinement_layers must be >= 1")
        if self.class_pad_length < 0:
            raise ValueError(f"class_pad_length must be >= 0, got {self.class_pad_length}")
        if self.clip_activation not in ("auto", "quick_gelu", "gelu"):
            raise ValueError(
                f"clip_activation must be 'auto', 'quick_gelu' or 'gelu', got {self.clip_activation!r}"
            )
        if self.class_residual not in ("reference", "update"):
            raise ValueError(f"class_residual must be 'reference' or 'update', got {self.class_residual!r}")

    @property
    def num_correlation_channels(self) -> int:
        """R * P, the channels of the correlation volume (Eq. 4)."""
        return len(self.rotations) * len(self.prompt_templates)


_POSITIVE = (  # AerOSegConfig fields that are sizes: whole numbers >= 1
    "clip_image_size", "guidance_image_size", "hidden_dim", "correlation_kernel", "refinement_layers", "window_size",
    "spatial_heads", "class_heads", "guidance_proj_dim", "text_proj_dim", "class_pool", "back_projection_classes",
    "back_projection_hidden", "decoder_dims", "decoder_guidance_dims",
)  # fmt: skip

__all__ = ["AerOSegConfig", "ConfigBase", "REMOTE_SENSING_TEMPLATES", "GENERIC_TEMPLATES"]
