"""Mask-to-semantic inference: class probabilities of the proposals spread over their soft masks; and the
evaluation protocol of the mask-classification families."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from aeroseg.inference import shortest_edge_size


def semantic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Scores B×T×H×W from class_logits B×Q×(T+1) (last column "no object") and mask_logits B×Q×H×W.

    score[c, x] = Σ_q softmax(class_logits[q])[c] · sigmoid(mask_logits[q, x]), the no-object probability
    dropped (Mask2Former ``maskformer_model.py``, ``MaskFormer.semantic_inference``; SAN ``san/model/san.py``,
    ``SAN.semantic_inference``). The scores are not normalised: at a pixel they sum to the expected number
    of object masks covering it.
    """
    probs = F.softmax(class_logits, dim=-1)[..., :-1]  # B×Q×T
    return torch.einsum("bqc,bqhw->bchw", probs, mask_logits.sigmoid())


def as_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Semantic scores B×T×H×W as values in [0, 1]: divided by their sum over T where it exceeds 1 (the
    argmax is unchanged)."""
    return scores / scores.sum(1, keepdim=True).clamp(min=1)


@torch.inference_mode()
def reference_probabilities(model: Any, image: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
    """T×H×W in [0, 1] for ``image`` (3×H×W, float in [0, 1] or uint8) by SAN's and SCAN's evaluation protocol
    (their ``train_net.py`` test loader and ``forward`` in eval mode): the shorter side resized to
    ``config.test_size`` (``INPUT.MIN_SIZE_TEST``, the longer at most ``config.test_max_size``), one pass,
    the scores brought back to H×W (``sem_seg_postprocess``).

    The resize is antialiased bilinear (as detectron2's ``ResizeShortestEdge``, PIL bilinear); the model pads
    the result to a multiple of 32 and ``model.scores(feats, classes, size=(H, W))`` resizes its proposals.
    """
    height, width = image.shape[-2:]
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    size = shortest_edge_size(height, width, model.config.test_size, model.config.test_max_size)
    resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)
    feats = model.encode(resized.clamp(0, 1))
    return as_probabilities(model.scores(feats, classes, size=(height, width)))[0]
