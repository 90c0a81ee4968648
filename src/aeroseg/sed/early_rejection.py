"""SED's category early rejection (paper Sec. 3.3): a 3×3 head before each decoder stage scores every class at
every pixel; at inference the classes that are in no pixel's top k are dropped before the stage
(``Aggregator.head0/1/2``, ``fast_conv_decoder`` and ``get_valid_idx_from_mask`` of
``sed/modeling/transformer/model.py``). In training the heads learn from the same segmentation loss, on
features the loss does not reach further back (``.detach()``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

REJECTED_LOGIT = -1e4
"""Logit given to a rejected class: its sigmoid is exactly 0 in float32, SED's probability for it."""


class CategoryEarlyRejection(nn.Module):
    """The rejection heads of the three decoder stages.

    Args:
        in_dims: widths of the features entering each stage (the cost map embedding, then the stage outputs).
    """

    def __init__(self, in_dims: Sequence[int]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Conv2d(d, 1, kernel_size=3, padding=1) for d in in_dims)

    def score(self, stage: int, x: torch.Tensor, batch: int) -> torch.Tensor:
        """x: (B·T)×C×h×w features entering ``stage`` → B×T×h×w class scores (logits)."""
        s = self.heads[stage](x)
        return s.view(batch, -1, *s.shape[-2:])

    @staticmethod
    def kept(scores: torch.Tensor, topk: int) -> torch.Tensor:
        """scores: B×T×h×w → bool T: the classes among the ``topk`` best of at least one pixel of the batch."""
        T = scores.shape[1]
        best = scores.topk(min(topk, T), dim=1).indices  # (B, k, h, w)
        return torch.bincount(best.reshape(-1), minlength=T) > 0
