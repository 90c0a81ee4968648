"""Hungarian matching of predicted masks to ground-truth masks (Mask2Former ``HungarianMatcher``).

The cost of a (query, target) pair is ``cost_class · (-p_class) + cost_mask · BCE + cost_dice · dice``, the
two mask terms on ``num_points`` uniform points shared by all masks of an image, solved by
``scipy.optimize.linear_sum_assignment``. The cost terms are ``transformers``' Mask2Former functions; the
loop is ours because ``Mask2FormerHungarianMatcher`` draws its points from the global RNG (here: from
``generator``, in the same order: one draw per image) and does not compute the costs in float32 under
autocast as the official matcher does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from transformers.models.mask2former.modeling_mask2former import (
    pair_wise_dice_loss,
    pair_wise_sigmoid_cross_entropy_loss,
    sample_point,
)

from aeroseg.mask_classification.targets import MaskPredictions, MaskTargets

Assignment = list[tuple[torch.Tensor, torch.Tensor]]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of the Q queries to the K targets of each image (Q >= K: K pairs).

    Args:
        cost_class: weight of the class cost (minus the predicted probability of the target class).
        cost_mask: weight of the sigmoid cross-entropy between the masks.
        cost_dice: weight of the dice loss between the masks.
        num_points: points sampled per image for the mask costs.
    """

    def __init__(
        self,
        *,
        cost_class: float = 1.0,
        cost_mask: float = 1.0,
        cost_dice: float = 1.0,
        num_points: int = 12544,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("at least one matching cost must be non-zero")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self, class_logits: torch.Tensor, mask_logits: torch.Tensor, target: MaskTargets, points: torch.Tensor
    ) -> torch.Tensor:
        """Q×K cost of one image: class_logits Q×(T+1), mask_logits Q×h×w, points 1×P×2 in [0, 1]²."""
        cost_class = -class_logits.float().softmax(-1)[:, target.labels]  # Q×K
        masks = target.masks.to(mask_logits)[:, None]  # K×1×H×W
        tgt = sample_point(masks, points.repeat(masks.shape[0], 1, 1), align_corners=False).squeeze(1)
        pred = mask_logits[:, None]
        out = sample_point(pred, points.repeat(pred.shape[0], 1, 1), align_corners=False).squeeze(1)
        out, tgt = out.float(), tgt.float()  # Q×P, K×P
        with torch.autocast(out.device.type, enabled=False):
            cost_mask = pair_wise_sigmoid_cross_entropy_loss(out, tgt)
            cost_dice = pair_wise_dice_loss(out, tgt)
        return self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice

    @torch.no_grad()
    def forward(
        self,
        predictions: MaskPredictions,
        targets: Sequence[MaskTargets],
        generator: torch.Generator | None = None,
    ) -> Assignment:
        """Per image, (query indices, target indices), int64 on the CPU, ordered by query index."""
        indices = []
        for b, target in enumerate(targets):
            mask_logits = predictions.mask_logits[b]
            points = torch.rand(1, self.num_points, 2, device=mask_logits.device, generator=generator)
            cost = self.cost_matrix(predictions.class_logits[b], mask_logits, target, points)
            rows, cols = linear_sum_assignment(cost.reshape(cost.shape[0], -1).cpu().numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices
