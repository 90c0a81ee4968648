"""What a mask-classification model predicts per supervised layer, and its targets from a semantic mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MaskPredictions:
    """One decoder layer's set prediction.

    class_logits: B×Q×(T+1), the last column "no object"; mask_logits: B×Q×h×w (any resolution: the losses
    sample points in normalised coordinates).
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor


@dataclass
class SetPrediction:
    """What a mask-classification model's ``forward_train`` gives its criterion: the set prediction of every
    supervised layer (the final one last), and the padded input size (H', W') the masks are padded to."""

    layers: list[MaskPredictions]
    padded_size: tuple[int, int]


@dataclass
class MaskTargets:
    """One image's ground truth: labels K (int64 class ids in 0..T-1) and masks K×H×W (float 0/1)."""

    labels: torch.Tensor
    masks: torch.Tensor


def semantic_targets(masks: torch.Tensor, ignore_index: int = 255) -> list[MaskTargets]:
    """Per image of ``masks`` (B×H×W class ids), one binary mask per class present, in increasing class order,
    ``ignore_index`` left out; an image with none gets K = 0 (as Mask2Former's
    ``MaskFormerSemanticDatasetMapper``: ``np.unique`` of the labels without the ignore label)."""
    targets = []
    for mask in masks:
        labels = torch.unique(mask)
        labels = labels[labels != ignore_index].long()
        binary = (mask[None] == labels[:, None, None]).float()  # K×H×W
        targets.append(MaskTargets(labels=labels, masks=binary))
    return targets
