"""SED's training loss (``SED.forward`` in training mode, ``sed/sed_model.py``): binary cross-entropy of the
final logits and of each category-rejection head, summed (detectron2 sums the ``loss_sem_seg_i`` entries)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.sed.config import SEDConfig
from aeroseg.sed.model import SEDOutput

PARTS = ("final", "rejection_0", "rejection_1", "rejection_2")
"""Names of the four terms: SED's ``loss_sem_seg_0`` (final logits) to ``loss_sem_seg_3`` (the rejection head
before the last stage)."""


def segmentation_bce(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """logits: B×T×h×w, resized (bilinear) to the masks B×H×W → BCE against one-hot targets, mean over every
    pixel and class. Labels outside 0..T-1 (the ignore value) are negatives for every class, as SED's zero
    targets at ignored pixels."""
    logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    classes = torch.arange(logits.shape[1], device=masks.device).view(1, -1, 1, 1)
    target = (masks[:, None] == classes).to(logits.dtype)  # (B, T, H, W)
    return F.binary_cross_entropy_with_logits(logits, target)


class SEDLoss(nn.Module):
    """Sum of :func:`segmentation_bce` over the final logits and the three rejection heads' scores.

    Built as every family's criterion, ``SEDLoss(config, ignore_index=)``; neither changes it: SED's loss has
    no weights, and a pixel whose label is not a class (the ignore value whatever it is) is a negative for
    every class.
    """

    def __init__(self, config: SEDConfig | None = None, ignore_index: int = 255) -> None:
        super().__init__()

    def forward(self, output: SEDOutput, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """output: :meth:`SED.forward_train`'s; masks: B×H×W class indices (ignore value elsewhere)."""
        terms = [output.logits, *output.rejection]
        losses = {name: segmentation_bce(t, masks) for name, t in zip(PARTS, terms, strict=True)}
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses
