"""Correlation feature computation (paper Eq. 3–4, docs/model.md §4)."""

from __future__ import annotations

import torch
from torch import nn

from aeroseg.precision import fp32


@fp32  # the correlation normalisation stays fp32 (docs/model.md §12): the cosine of unit vectors
def cosine(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """image: B×R×C×h×w and text: T×P×C, both L2-normalised → B×R×P×T×h×w cosine similarities (Eq. 3), fp32."""
    return torch.einsum("brchw,tpc->brpthw", image, text)


class CorrelationFeatures(nn.Module):
    """Cosine similarity of every rotation's dense image embedding with every prompt's text embedding,
    then one convolution per class from the R·P similarity maps to d channels.

    Args:
        num_maps: R·P, the similarity maps per class.
        hidden_dim: d.
        kernel_size: side of the per-class convolution (7).
    """

    def __init__(self, *, num_maps: int, hidden_dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(num_maps, hidden_dim, kernel_size, padding=kernel_size // 2)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """image: B×R×C×h×w and text: T×P×C, both L2-normalised → B×d×T×h×w."""
        B, R, _, h, w = image.shape
        T, P, _ = text.shape
        corr = cosine(image, text).reshape(B, R * P, T, h, w)  # Eq. 3
        x = corr.transpose(1, 2).reshape(B * T, R * P, h, w)
        x = self.conv(x)  # (B*T, d, h, w), Eq. 4
        return x.view(B, T, -1, h, w).transpose(1, 2)
