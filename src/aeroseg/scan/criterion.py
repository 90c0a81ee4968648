"""SCAN's training loss: Mask2Former's set criterion (``scan/maskformer_model.py``, ``Mask2Former.from_config``:
``HungarianMatcher`` and ``SetCriterion`` with ``MASK_FORMER.CLASS_WEIGHT`` / ``MASK_WEIGHT`` / ``DICE_WEIGHT``;
SCAN's ``criterion.py`` and ``matcher.py`` are Mask2Former's without TorchScript) on the supervised layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.mask_classification import HungarianMatcher, SetCriterion, semantic_targets
from aeroseg.scan.config import SCANConfig
from aeroseg.scan.model import SCANOutput


class SCANCriterion(nn.Module):
    """``forward(output, masks)``: masks B×H×W class ids into the T training classes (``ignore_index``
    elsewhere) → ``{"loss", "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", ...}`` (parts unweighted).

    The masks are padded with ``ignore_index`` to the model's padded input (where the official targets are
    zero-padded), then every class present is one target mask (Mask2Former's semantic dataset mapper).
    """

    def __init__(self, config: SCANConfig, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        matcher = HungarianMatcher(
            cost_class=config.class_weight,
            cost_mask=config.mask_weight,
            cost_dice=config.dice_weight,
            num_points=config.train_num_points,
        )
        self.set_criterion = SetCriterion(
            matcher,
            class_weight=config.class_weight,
            mask_weight=config.mask_weight,
            dice_weight=config.dice_weight,
            no_object_weight=config.no_object_weight,
            num_points=config.train_num_points,
            oversample_ratio=config.oversample_ratio,
            importance_sample_ratio=config.importance_sample_ratio,
        )

    def forward(
        self, output: SCANOutput, masks: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        h, w = output.padded_size
        masks = F.pad(masks, (0, w - masks.shape[-1], 0, h - masks.shape[-2]), value=self.ignore_index)
        targets = semantic_targets(masks, self.ignore_index)
        return self.set_criterion(output.layers, targets, generator=generator)
