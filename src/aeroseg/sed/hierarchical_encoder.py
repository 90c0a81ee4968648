"""SED's hierarchical encoder (paper Sec. 3.1): the CLIP ConvNeXt image tower, read at every stage.

The trunk is ``transformers.ConvNextModel`` (timm's ConvNeXt renamed, :mod:`aeroseg.convert.convnext_clip`);
the head is open_clip's visual head (``open_clip/timm_model.py`` ``TimmModel.head``). As SED's open_clip copy
(``TimmModel.forward`` with ``dense``), every position of the last stage goes through the head (timm's head
norm, then the projection), giving dense CLIP embeddings; the four stage outputs are the hierarchical features
the decoder fuses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ConvNextModel


class VisualHead(nn.Module):
    """open_clip's ``TimmModel`` projection: ``linear`` (one bias-free linear) or ``mlp`` (linear, GELU,
    dropout, bias-free linear to the embedding), on ``in_dim``-wide vectors."""

    def __init__(self, *, kind: str, in_dim: int, embed_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.kind = kind
        if kind == "linear":
            self.proj = nn.Linear(in_dim, embed_dim, bias=False)
        elif kind == "mlp":
            self.fc1 = nn.Linear(in_dim, 2 * embed_dim)
            self.act = nn.GELU()
            self.drop = nn.Dropout(dropout)
            self.fc2 = nn.Linear(2 * embed_dim, embed_dim, bias=False)
        else:
            raise ValueError(f"visual head must be 'linear' or 'mlp', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: …×in_dim → …×embed_dim."""
        if self.kind == "linear":
            return self.proj(x)
        return self.fc2(self.drop(self.act(self.fc1(x))))


class HierarchicalEncoder(nn.Module):
    """CLIP ConvNeXt image encoder giving stage features and dense embeddings.

    Args:
        trunk: the ConvNeXt (``transformers.ConvNextModel``; its final ``layernorm`` is timm's head norm).
        head: the CLIP projection of the trunk's channels to the embedding.
        image_size: side of the square CLIP input every image is resized to (SED: 768).
        pixel_mean, pixel_std: normalisation in 0..255 units (SED's ``MODEL.CLIP_PIXEL_MEAN`` / ``_STD``).
    """

    def __init__(
        self,
        trunk: ConvNextModel,
        head: VisualHead,
        *,
        image_size: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.image_size = image_size
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of the four stage outputs (res2..res5)."""
        return tuple(self.trunk.config.hidden_sizes)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """images: B×3×H×W in [0, 1] → (stage features [B×C_i×S/4^…], dense embeddings B×E×S/32×S/32).

        As ``SED.forward`` (``sed/sed_model.py``): normalised in 0..255 units, then resized (bilinear) to the
        CLIP input; the stage outputs res2..res5 are at strides 4, 8, 16 and 32 of it.
        """
        x = (images * 255 - self.pixel_mean) / self.pixel_std
        x = F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        x = self.trunk.embeddings(x)  # stem: B×C_0×S/4×S/4
        levels = []
        for stage in self.trunk.encoder.stages:
            x = stage(x)
            levels.append(x)
        dense = self.head(self.trunk.layernorm(x.permute(0, 2, 3, 1)))  # (B, h, w, E), per position
        return levels, dense.permute(0, 3, 1, 2).contiguous()
