"""The frozen CLIP's shallow layers: visual features for the side adapter and for mask recognition.

SAN ``san/model/clip_utils/visual.py``, ``FeatureExtractor``: patch embedding, [CLS] token, the position
embedding resized bicubically to the input grid (``attn_helper.py``, ``resize_pos_embed2d``), ``ln_pre``, then
CLIP layers 1..``feature_last_layer``; the tokens after each (0 = after ``ln_pre``) are kept. Built on
``transformers``' ``CLIPVisionModel`` parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings


@dataclass
class ClipFeatures:
    """tokens[i]: B×(1+h·w)×C after CLIP layer i (0: the embeddings after ``ln_pre``), [CLS] first; grid (h, w)."""

    tokens: list[torch.Tensor]
    grid: tuple[int, int]

    def spatial(self, layer: int) -> torch.Tensor:
        """The patch tokens of ``layer`` as a map B×C×h×w."""
        x = self.tokens[layer][:, 1:]
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.grid)


def resize_position_embedding(pos: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """(1 + src_h·src_w)×C position embedding ([CLS] first) → (1 + dst_h·dst_w)×C, the grid part bicubic."""
    if src == dst:
        return pos
    grid = pos[1:].T.reshape(1, -1, *src)  # 1×C×h×w
    grid = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False, antialias=False)
    return torch.cat([pos[:1], grid.reshape(pos.shape[1], -1).T])


class ClipFeatureExtractor(nn.Module):
    """CLIP image tokens of the first ``len(layers)`` layers, for inputs of any size.

    Args:
        embeddings: CLIP's vision embeddings (patch convolution, [CLS] token, position embedding).
        pre_layernorm: CLIP's ``ln_pre``.
        layers: CLIP's first encoder layers.
    """

    def __init__(
        self, embeddings: CLIPVisionEmbeddings, pre_layernorm: nn.LayerNorm, layers: nn.ModuleList
    ) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.pre_layernorm = pre_layernorm
        self.layers = layers
        side = embeddings.image_size // embeddings.patch_size
        self.pretrained_grid = (side, side)

    @property
    def width(self) -> int:
        return self.embeddings.embed_dim

    def forward(self, images: torch.Tensor) -> ClipFeatures:
        """images: B×3×H×W, normalised → tokens of layers 0..len(layers) on the (H/patch)×(W/patch) grid."""
        x = self.embeddings.patch_embedding(images)  # B×C×h×w
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # B×hw×C
        cls = self.embeddings.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        pos = self.embeddings.position_embedding.weight.to(x.dtype)
        x = torch.cat([cls, x], dim=1) + resize_position_embedding(pos, self.pretrained_grid, grid)
        x = self.pre_layernorm(x)
        tokens = [x]
        for layer in self.layers:
            x = layer(x, None)
            tokens.append(x)
        return ClipFeatures(tokens, grid)
