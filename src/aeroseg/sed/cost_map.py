"""SED's cost map (paper Sec. 3.1, Eq. 1): cosine similarity of dense image and text embeddings, embedded by a
convolution (``Aggregator.correlation`` and ``Aggregator.corr_embed`` of ``sed/modeling/transformer/model.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KERNEL_SIZE = 7  # Aggregator.conv1: 7×7, padding 3


class CostMap(nn.Module):
    """Pixel-text cost map and its embedding.

    Args:
        num_templates: P, the prompt templates (the channels of the cost map of one class).
        hidden_dim: C, the embedding width.
    """

    def __init__(self, *, num_templates: int, hidden_dim: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(num_templates, hidden_dim, kernel_size=KERNEL_SIZE, padding=KERNEL_SIZE // 2)

    def forward(self, dense: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """dense: B×E×h×w image embeddings; text: T×P×E (unit) text embeddings → (cost B×P×T×h×w, embedded
        cost B×C×T×h×w)."""
        cost = torch.einsum("bchw,tpc->bpthw", F.normalize(dense, dim=1), F.normalize(text, dim=-1))
        B, P, T, h, w = cost.shape
        x = self.embed(cost.transpose(1, 2).reshape(B * T, P, h, w))  # (B*T, C, h, w)
        return cost, x.view(B, T, -1, h, w).transpose(1, 2)
