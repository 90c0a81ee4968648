"""The one typed configuration of an AerOSeg model.

Every default below is the paper's value where the paper gives one, and otherwise the choice named in
``DESIGN.md`` (marked **choice** in the comments). The config travels inside every checkpoint
(``config.json``), so a model is rebuilt from its checkpoint alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

REMOTE_SENSING_TEMPLATES: tuple[str, ...] = (
    "A satellite image of a {}",
    "A land use image of a {}",
    "A remote sensing image of a {}",
    "An aerial image of a {}",
)
"""The paper's remote-sensing prompt templates (Sec. 3.1, after RS-CLIP)."""

GENERIC_TEMPLATES: tuple[str, ...] = ("A photo of a {} in a scene",)
"""The generic prompt of CAT-Seg and OVRS (Baseline, Config-A, Config-B)."""

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
        self.validate()

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


@dataclass
class AerOSegConfig(ConfigBase):
    """Configuration of :class:`aeroseg.AerOSeg`. Field names are used unchanged from here to the modules."""

    preset: str = "aeroseg"  # name of the preset this config was built from (informational)

    # --- 1. Vision-language backbone (CLIP) --------------------------------------------------------
    clip: str = "openai/clip-vit-base-patch16"  # hub id, local directory, or original .pt/.bin/.safetensors
    clip_arch: str = "clip-vit-b-16"  # shipped architecture used with pretrained=False and for original files
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
    guidance_trainable: bool = False  # fine-tune the guidance encoder (paper Table 4)
    guidance_lr: float = 2e-6  # lr of the guidance encoder when it trains (**choice**)

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
    class_pool: int = 2  # CAT-Seg average-pools the grid for class attention; 1 disables

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
    decoder_attention_activation: Literal["none", "sigmoid"] = "none"  # **choice**: gate as in DESIGN §6

    # --- 7. Training ---------------------------------------------------------------------------------
    lr: float = 2e-4  # lr of the new modules
    ignore_as_negative: bool = False  # **choice**: ignore pixels are excluded (CAT-Seg: negatives)

    def validate(self) -> None:
        """Raise ``ValueError`` with a one-line message for an inconsistent config."""
        if not self.rotations or any(r % 90 for r in self.rotations):
            raise ValueError(f"rotations must be multiples of 90 degrees, got {self.rotations}")
        if not self.prompt_templates or any("{}" not in t for t in self.prompt_templates):
            raise ValueError("every prompt template must contain '{}' for the class name")
        if self.guidance_type not in ("sam", "sam2", "sam3", "clip"):
            raise ValueError(
                f"guidance_type must be 'sam', 'sam2', 'sam3' or 'clip', got {self.guidance_type!r}"
            )
        if self.guidance_type != "clip" and not (self.guidance or self.guidance_arch):
            raise ValueError(f"guidance_type={self.guidance_type!r} needs guidance (a hub id, dir or file)")
        if self.reconstruction_target == "sam" and self.back_projection and self.guidance_type == "clip":
            raise ValueError("reconstruction_target='sam' needs SAM guidance; use 'clip' or 'rgb'")
        if self.window_size < 1 or self.class_pool < 1 or self.refinement_layers < 1:
            raise ValueError("window_size, class_pool and refinement_layers must be >= 1")

    @property
    def num_correlation_channels(self) -> int:
        """R * P, the channels of the correlation volume (Eq. 4)."""
        return len(self.rotations) * len(self.prompt_templates)


__all__ = ["AerOSegConfig", "ConfigBase", "REMOTE_SENSING_TEMPLATES", "GENERIC_TEMPLATES"]
