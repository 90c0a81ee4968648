"""Mask classification: set prediction with Hungarian matching, and mask-to-semantic inference.

Shared by the mask-classification families (SAN, SCAN; imported on first use, so that their configs load
without torch), whose criteria and matchers are Mask2Former's
(``facebookresearch/Mask2Former``: ``mask2former/modeling/criterion.py``, ``matcher.py``,
``maskformer_model.py``). A model predicts, per decoder layer that is supervised, ``MaskPredictions``:
Q mask proposals with their class logits over T classes plus a last "no object" column.

API::

    targets = semantic_targets(masks, ignore_index=255)      # B×H×W class ids -> list of MaskTargets
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=12544)
    criterion = SetCriterion(matcher, class_weight=2.0, mask_weight=5.0, dice_weight=5.0,
                             no_object_weight=0.1, num_points=12544, oversample_ratio=3.0,
                             importance_sample_ratio=0.75)
    losses = criterion(layers, targets, generator=g)  # layers: [aux_0, ..., aux_{n-2}, final]
    # -> {"loss": weighted sum, "loss_ce", "loss_mask", "loss_dice", "loss_ce_0", ...} (unweighted parts)
    matcher(layers[-1], targets, generator=g)         # -> [(query ids, target ids)] per image, int64
    scores = semantic_inference(class_logits, mask_logits)   # B×Q×(T+1), B×Q×H×W -> B×T×H×W
    probs = as_probabilities(scores)                          # divided where they sum above 1: [0, 1]
    loss = MaskClassificationLoss(config, ignore_index=255)(SetPrediction(layers, padded_size), masks)
    probs = reference_probabilities(model, image, classes)   # SAN's and SCAN's evaluation protocol

Random points come from ``generator`` (``torch.Generator`` on the predictions' device; None: the global RNG),
drawn in the official order: per layer (final first, then the auxiliary ones in order) the matcher's one
draw per image, then the mask loss's importance sampling (oversampled candidates, then the random rest).
With the same seed the official code draws the same points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aeroseg.lazy import lazy_exports

_LAZY = {
    "MaskClassificationLoss": "aeroseg.mask_classification.criterion",
    "SetCriterion": "aeroseg.mask_classification.criterion",
    "HungarianMatcher": "aeroseg.mask_classification.matcher",
    "uncertain_point_coords": "aeroseg.mask_classification.point_sampling",
    "as_probabilities": "aeroseg.mask_classification.semantic",
    "reference_probabilities": "aeroseg.mask_classification.semantic",
    "semantic_inference": "aeroseg.mask_classification.semantic",
    "MaskPredictions": "aeroseg.mask_classification.targets",
    "MaskTargets": "aeroseg.mask_classification.targets",
    "SetPrediction": "aeroseg.mask_classification.targets",
    "semantic_targets": "aeroseg.mask_classification.targets",
    "TemplateTextEmbeddings": "aeroseg.mask_classification.text_embeddings",
}

if TYPE_CHECKING:
    from aeroseg.mask_classification.criterion import MaskClassificationLoss, SetCriterion
    from aeroseg.mask_classification.matcher import HungarianMatcher
    from aeroseg.mask_classification.point_sampling import uncertain_point_coords
    from aeroseg.mask_classification.semantic import (
        as_probabilities,
        reference_probabilities,
        semantic_inference,
    )
    from aeroseg.mask_classification.targets import (
        MaskPredictions,
        MaskTargets,
        SetPrediction,
        semantic_targets,
    )
    from aeroseg.mask_classification.text_embeddings import TemplateTextEmbeddings

__getattr__ = lazy_exports(globals(), _LAZY)


__all__ = [
    "HungarianMatcher",
    "MaskClassificationLoss",
    "MaskPredictions",
    "MaskTargets",
    "SetCriterion",
    "SetPrediction",
    "TemplateTextEmbeddings",
    "as_probabilities",
    "reference_probabilities",
    "semantic_inference",
    "semantic_targets",
    "uncertain_point_coords",
]
