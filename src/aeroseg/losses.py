"""Training losses (paper Eq. 12–14, docs/model.md §6 and §8), kept beside the model rather than in its forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.config import AerOSegConfig
from aeroseg.modeling.aeroseg import AerOSegOutput


def back_projection_loss(reconstruction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Distance between B×C×h×w reconstruction and (stop-gradient) target: ``l1``, ``l2`` or ``cosine``."""
    target = target.detach()
    if kind == "l1":
        return F.l1_loss(reconstruction, target)
    if kind == "l2":
        return F.mse_loss(reconstruction, target)
    return (1 - F.cosine_similarity(reconstruction, target, dim=1)).mean()


class AerOSegLoss(nn.Module):
    """Binary cross-entropy over all classes (Eq. 12) plus λ·L_bp (Eq. 14).

    By default (``ignore_as_negative``) a pixel labelled ``ignore_index`` (background, an unseen class) is a
    negative target for every class and counts in the mean, as in CAT-Seg's ``cat_seg/cat_seg_model.py``
    (``_targets`` zero there); otherwise it leaves the mean.

    Args:
        config: the model's config (``ignore_as_negative``, ``back_projection_loss``,
            ``back_projection_weight``).
        ignore_index: label of pixels without a class.
    """

    def __init__(self, config: AerOSegConfig, ignore_index: int = 255) -> None:
        super().__init__()
        self.config = config
        self.ignore_index = ignore_index

    def forward(self, output: AerOSegOutput, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """output.logits: B×T×H×W; masks: B×H'×W' class indices into the T classes (ignore_index elsewhere)."""
        logits = output.logits
        if logits.shape[-2:] != masks.shape[-2:]:
            logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        T = logits.shape[1]
        classes = torch.arange(T, device=masks.device).view(1, T, 1, 1)
        target = (masks[:, None] == classes).to(logits.dtype)  # B×T×H×W one-hot, all zero at ignore pixels
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.config.ignore_as_negative:
            bce = bce.mean()
        else:
            valid = (masks != self.ignore_index)[:, None].to(bce.dtype)
            bce = (bce * valid).sum() / (valid.sum() * T).clamp(min=1)
        losses = {"bce": bce}
        loss = bce
        if output.reconstruction is not None and output.target is not None:
            bp = back_projection_loss(output.reconstruction, output.target, self.config.back_projection_loss)
            losses["back_projection"] = bp
            loss = loss + self.config.back_projection_weight * bp
        losses["loss"] = loss
        return losses
