"""Guidance encoder (paper Sec. 3.1, docs/model.md §3): SAM / SAM2 image features (CLIP's own: ``clip_guidance``).

Every encoder returns :class:`GuidanceFeatures` already resized to the grids they meet: ``final`` to the
correlation grid h×w (spatial refinement and back-projection target), ``decoder[0]`` to h×w and
``decoder[1]`` to 2h×2w (decoder stages 1 and 2 bring them up once more by nearest ×2, Eq. 10).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.encoders.hiera_image_encoder import hiera_fpn_forward
from aeroseg.encoders.sam_image_encoder import ATTENTION_PATHS, sam_vit_forward
from aeroseg.precision import fp32

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class GuidanceFeatures:
    """final: B×C_f×h×w; decoder: [B×C_1×h×w, B×C_2×2h×2w]."""

    final: torch.Tensor
    decoder: list[torch.Tensor]


RESIZE_MODES = ("antialias", "area", "bilinear")


@fp32  # the precision rule (docs/model.md §12); the antialiased kernel has no bf16 or fp16 version on a CPU
def _resize(x: torch.Tensor, size: int, mode: str = "antialias") -> torch.Tensor:
    """B×C×H×W -> B×C×size×size, float32 under any autocast. Shrinking: ``antialias`` (bilinear with a low-pass
    filter, default), ``area`` (average of the covered cells) or ``bilinear`` (no low-pass: aliases a 64-px map
    shrunk to 24); enlarging is bilinear in every mode."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if mode == "area" and min(x.shape[-2:]) > size:
        return F.interpolate(x, size=(size, size), mode="area")
    antialias = mode == "antialias" and min(x.shape[-2:]) > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)


def _to_grids(
    final: torch.Tensor, coarse: torch.Tensor, fine: torch.Tensor, grid: int, mode: str = "antialias"
) -> GuidanceFeatures:
    return GuidanceFeatures(
        final=_resize(final, grid, mode), decoder=[_resize(coarse, grid, mode), _resize(fine, 2 * grid, mode)]
    )


class _FrozenImageEncoder(nn.Module):
    """Resizing, ImageNet normalisation and freezing shared by the SAM and SAM2 encoders."""

    def __init__(
        self, encoder: nn.Module, *, image_size: int, trainable: bool, resize: str = "antialias"
    ) -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"guidance_resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        self.encoder = encoder
        self.image_size = image_size
        self.trainable = trainable
        self.resize = resize  # how feature maps are brought to the grids (_resize)
        self.encoder.requires_grad_(trainable)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> _FrozenImageEncoder:
        super().train(mode)
        if not self.trainable:
            self.encoder.eval()  # a frozen encoder never changes behaviour with the model's mode
        return self

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor, grid: int) -> GuidanceFeatures:
        """images: B×3×H×W in [0, 1]; grid: side h of the correlation grid."""
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self._encode(self._pixels(images), grid)  # each encoder below defines _encode


class SamGuidanceEncoder(_FrozenImageEncoder):
    """SAM ViT image encoder: the weights of ``transformers``' ``SamVisionEncoder``, run by
    :func:`aeroseg.encoders.sam_image_encoder.sam_vit_forward` (same results, faster).

    Args:
        encoder: ``SamModel.vision_encoder``.
        layers: 1-based blocks (paper: 8 and 16 of ViT-L) feeding decoder stages 1 and 2.
        final: ``"neck"`` (256 channels, **choice**) or ``"last_block"`` (the last block's width).
        attention: ``"sdpa"``, ``"flex"`` or ``"eager"`` (see :mod:`aeroseg.encoders.sam_image_encoder`).
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        image_size: int,
        layers: Sequence[int],
        final: str = "neck",
        trainable: bool = False,
        resize: str = "antialias",
        attention: str = "sdpa",
    ) -> None:
        super().__init__(encoder, image_size=image_size, trainable=trainable, resize=resize)
        if attention not in ATTENTION_PATHS:
            raise ValueError(f"guidance_attention must be one of {ATTENTION_PATHS}, got {attention!r}")
        self.attention = attention
        config = encoder.config
        if any(not 1 <= i <= config.num_hidden_layers for i in layers):
            raise ValueError(
                f"guidance_layers {tuple(layers)} outside the SAM encoder's 1..{config.num_hidden_layers}"
            )
        self.layers = tuple(layers)
        self.final = final
        self.final_dim = config.output_channels if final == "neck" else config.hidden_size
        self.decoder_dims = (config.hidden_size, config.hidden_size)

    def _encode(self, pixels: torch.Tensor, grid: int) -> GuidanceFeatures:
        x, taken = sam_vit_forward(self.encoder, pixels, taps=self.layers, attention=self.attention)
        final = self.encoder.neck(x) if self.final == "neck" else x.permute(0, 3, 1, 2)
        coarse, fine = (t.permute(0, 3, 1, 2) for t in taken)  # (B, C, h', w')
        return _to_grids(final, coarse, fine, grid, self.resize)


class Sam2GuidanceEncoder(_FrozenImageEncoder):
    """SAM2 / SAM2.1 Hiera image encoder: the weights of ``transformers``' ``Sam2VisionModel``, run by
    :func:`aeroseg.encoders.hiera_image_encoder.hiera_fpn_forward`; the three FPN levels (strides 16, 8, 4)
    feed the final feature and decoder stages 1 and 2."""

    def __init__(
        self, encoder: nn.Module, *, image_size: int, trainable: bool = False, resize: str = "antialias"
    ) -> None:
        super().__init__(encoder, image_size=image_size, trainable=trainable, resize=resize)
        fpn_dim = encoder.config.fpn_hidden_size
        self.final_dim = fpn_dim
        self.decoder_dims = (fpn_dim, fpn_dim)

    def _encode(self, pixels: torch.Tensor, grid: int) -> GuidanceFeatures:
        fine, mid, coarse = hiera_fpn_forward(self.encoder, pixels)[-3:]  # high to low resolution
        return _to_grids(coarse, mid, fine, grid, self.resize)


class Sam3GuidanceEncoder(_FrozenImageEncoder):
    """SAM 3's image encoder (``transformers`` ``Sam3VisionModel``: ViT + FPN). The FPN levels the detector
    uses (scales ×4, ×2, ×1 of the ViT grid: 288², 144², 72² at 1008) feed decoder stage 2, stage 1 and the
    final feature, as SAM2's three levels do. Pixels are normalised with SAM 3's mean = std = 0.5."""

    def __init__(
        self, encoder: nn.Module, *, image_size: int, trainable: bool = False, resize: str = "antialias"
    ) -> None:
        super().__init__(encoder, image_size=image_size, trainable=trainable, resize=resize)
        self.mean.fill_(0.5)  # Sam3Processor: Normalize(mean=0.5, std=0.5)
        self.std.fill_(0.5)
        fpn_dim = encoder.config.fpn_hidden_size
        self.final_dim = fpn_dim
        self.decoder_dims = (fpn_dim, fpn_dim)

    def _encode(self, pixels: torch.Tensor, grid: int) -> GuidanceFeatures:
        fine, mid, coarse = self.encoder(pixels).fpn_hidden_states[:3]  # ×4, ×2, ×1 (the ×0.5 level unused)
        return _to_grids(coarse, mid, fine, grid, self.resize)
