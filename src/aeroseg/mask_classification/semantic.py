"""Mask-to-semantic inference: class probabilities of the proposals spread over their soft masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    argmax is unchanged; SAN's ``as_probabilities``, shared)."""
    return scores / scores.sum(1, keepdim=True).clamp(min=1)
