"""SED's skip-layer fusion module (paper Sec. 3.2, SFM): the aggregated features, upsampled ×2, concatenated
with the encoder's features of that level and the up-projected cost map, fused by two convolutions (``Up.up``,
``Up.conv`` = ``DoubleConv`` of ``sed/modeling/transformer/model.py``)."""

from __future__ import annotations

import torch
from torch import nn


class SkipLayerFusion(nn.Module):
    """Upsample, concatenate the two skips, fuse.

    Args:
        in_dim: C, width of the aggregated features.
        out_dim: width of the output (GroupNorm with ``out_dim // 16`` groups, as SED's ``DoubleConv``).
        skip_dim: g, width of each of the two skips (the projected encoder features and cost map); the
            transposed convolution gives ``C - g`` channels, so that with the skips the fusion sees ``C + g``.
    """

    def __init__(self, *, in_dim: int, out_dim: int, skip_dim: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_dim, in_dim - skip_dim, kernel_size=2, stride=2)
        groups = out_dim // 16
        self.fuse = nn.Sequential(
            nn.Conv2d(in_dim + skip_dim, out_dim, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(groups, out_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(groups, out_dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, encoder_skip: torch.Tensor, cost_skip: torch.Tensor) -> torch.Tensor:
        """x: (B·T)×C×h×w; encoder_skip: B×g×2h×2w (shared by the classes); cost_skip: (B·T)×g×2h×2w
        → (B·T)×out_dim×2h×2w."""
        x = self.up(x)
        T = x.shape[0] // encoder_skip.shape[0]
        return self.fuse(torch.cat([x, encoder_skip.repeat_interleave(T, dim=0), cost_skip], dim=1))
