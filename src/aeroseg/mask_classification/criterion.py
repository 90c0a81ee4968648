"""The set criterion of Mask2Former (``mask2former/modeling/criterion.py``, ``SetCriterion``).

After Hungarian matching, per supervised layer: cross-entropy of every query's class (the unmatched ones
target "no object", weighted ``no_object_weight``), and for the matched queries the sigmoid cross-entropy and
dice loss of their masks on ``num_points`` importance-sampled points (target masks of different sizes are
zero-padded to the largest, as its ``nested_tensor_from_tensor_list``). Mask losses are divided by the number of
target masks in the batch (averaged over processes when ``torch.distributed`` is initialised). The loss
functions are ``transformers``' Mask2Former ones; the loop is ours for the generator (see
:mod:`aeroseg.mask_classification`) and the official loss names, float32 class logits and weighting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers.models.mask2former.modeling_mask2former import (
    dice_loss,
    sample_point,
    sigmoid_cross_entropy_loss,
)

from aeroseg.mask_classification.matcher import Assignment, HungarianMatcher
from aeroseg.mask_classification.point_sampling import uncertain_point_coords
from aeroseg.mask_classification.targets import (
    MaskPredictions,
    MaskTargets,
    SetPrediction,
    semantic_targets,
)


class SetCriterion(nn.Module):
    """Matching-based losses of a list of layer predictions (auxiliary layers first, the final one last).

    Returns ``{"loss": Σ weight · part, "loss_ce", "loss_mask", "loss_dice"}`` for the final layer and the same
    parts suffixed ``_0``, ``_1``, ... for the auxiliary layers, each matched on its own (the parts
    unweighted; ``weight_dict`` maps each name to its weight).
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        *,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        self.matcher = matcher
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.no_object_weight = no_object_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def weight_dict(self, num_layers: int) -> dict[str, float]:
        """The weight of every loss name for ``num_layers`` supervised layers."""
        names = dict(self.weights)
        for i in range(num_layers - 1):
            names.update({f"{k}_{i}": v for k, v in self.weights.items()})
        return names

    def forward(
        self,
        layers: Sequence[MaskPredictions],
        targets: Sequence[MaskTargets],
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        num_masks = self.num_masks(targets, layers[-1].mask_logits.device)
        losses: dict[str, torch.Tensor] = {}
        for i, layer in enumerate([layers[-1], *layers[:-1]]):
            indices = self.matcher(layer, targets, generator=generator)
            suffix = "" if i == 0 else f"_{i - 1}"
            losses[f"loss_ce{suffix}"] = self.loss_labels(layer, targets, indices)
            mask, dice = self.loss_masks(layer, targets, indices, num_masks, generator)
            losses[f"loss_mask{suffix}"], losses[f"loss_dice{suffix}"] = mask, dice
        weights = self.weight_dict(len(layers))
        total = sum(weights[k] * v for k, v in losses.items())
        return {"loss": total, **losses}

    @staticmethod
    def num_masks(targets: Sequence[MaskTargets], device: torch.device) -> float:
        """Target masks per process in the batch, at least 1."""
        count = torch.as_tensor([float(sum(len(t.labels) for t in targets))], device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
            world = dist.get_world_size()
        return torch.clamp(count / world, min=1).item()

    def loss_labels(
        self, layer: MaskPredictions, targets: Sequence[MaskTargets], indices: Assignment
    ) -> torch.Tensor:
        """Class cross-entropy over all queries; unmatched ones target the last ("no object") column."""
        logits = layer.class_logits.float()  # B×Q×(T+1)
        no_object = logits.shape[-1] - 1
        weight = torch.ones(no_object + 1, device=logits.device)
        weight[-1] = self.no_object_weight
        classes = torch.full(logits.shape[:2], no_object, dtype=torch.int64, device=logits.device)
        batch, query = _source_index(indices)
        matched = [t.labels[j] for t, (_, j) in zip(targets, indices, strict=True)]
        classes[batch, query] = torch.cat(matched).to(logits.device)
        return F.cross_entropy(logits.transpose(1, 2), classes, weight)

    def loss_masks(
        self,
        layer: MaskPredictions,
        targets: Sequence[MaskTargets],
        indices: Assignment,
        num_masks: float,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sigmoid cross-entropy and dice of the matched masks on importance-sampled points."""
        batch, query = _source_index(indices)
        pred = layer.mask_logits[batch, query][:, None]  # N×1×h×w
        h, w = (max(t.masks.shape[d] for t in targets) for d in (-2, -1))  # zero-padded to the batch's
        padded = [F.pad(t.masks, (0, w - t.masks.shape[-1], 0, h - t.masks.shape[-2])) for t in targets]
        target = torch.cat([m[j] for m, (_, j) in zip(padded, indices, strict=True)])
        target = target.to(pred)[:, None]  # N×1×H×W
        with torch.no_grad():
            points = uncertain_point_coords(
                pred, self.num_points, self.oversample_ratio, self.importance_sample_ratio, generator
            )
            labels = sample_point(target, points, align_corners=False).squeeze(1)
        logits = sample_point(pred, points, align_corners=False).squeeze(1)  # N×P
        return sigmoid_cross_entropy_loss(logits, labels, num_masks), dice_loss(logits, labels, num_masks)


def _source_index(indices: Assignment) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch index, query index) of every matched query."""
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    return batch, torch.cat([src for src, _ in indices])


class MaskClassificationLoss(nn.Module):
    """The training loss of SAN and SCAN: their set criterion, built from the model's config (SAN
    ``SAN.from_config``, SCAN ``Mask2Former.from_config``: the matcher and criterion with ``CLASS_WEIGHT``,
    ``MASK_WEIGHT``, ``DICE_WEIGHT``, ``NO_OBJECT_WEIGHT``, ``TRAIN_NUM_POINTS``, ``OVERSAMPLE_RATIO``,
    ``IMPORTANCE_SAMPLE_RATIO``), on semantic masks.

    ``forward(output, masks)``: masks B×H×W class ids into the T training classes (``ignore_index``
    elsewhere) → ``{"loss", "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", ...}`` (parts unweighted). The
    masks are padded with ``ignore_index`` to the model's padded input (where the official targets are
    zero-padded), then every class present is one target mask (Mask2Former's semantic dataset mapper).
    """

    def __init__(self, config: Any, ignore_index: int = 255) -> None:
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
        self, output: SetPrediction, masks: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        h, w = output.padded_size
        masks = F.pad(masks, (0, w - masks.shape[-1], 0, h - masks.shape[-2]), value=self.ignore_index)
        targets = semantic_targets(masks, self.ignore_index)
        return self.set_criterion(output.layers, targets, generator=generator)
