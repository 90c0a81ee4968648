"""Feature fusion: CLIP features added into the side adapter's patch tokens.

SAN ``san/model/layers.py``, ``AddFusion``: a channels-first LayerNorm and a 1×1 convolution map the CLIP
feature map to the side width; it is resized bilinearly to the side grid and added to the patch tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of B×C×H×W (SAN ``layers.py``, ``LayerNorm``; eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class FeatureFusion(nn.Module):
    """tokens B×(h·w)×D + resize(conv(norm(clip B×C×h'×w'))) on the side grid (h, w)."""

    def __init__(self, clip_width: int, side_width: int) -> None:
        super().__init__()
        self.input_proj = nn.Sequential(LayerNorm2d(clip_width), nn.Conv2d(clip_width, side_width, 1))
        nn.init.kaiming_uniform_(self.input_proj[1].weight, a=1)  # detectron2 c2_xavier_fill
        nn.init.zeros_(self.input_proj[1].bias)

    def forward(self, tokens: torch.Tensor, clip: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        y = F.interpolate(self.input_proj(clip.contiguous()), size=grid, mode="bilinear", align_corners=False)
        return tokens + y.permute(0, 2, 3, 1).reshape(tokens.shape)
