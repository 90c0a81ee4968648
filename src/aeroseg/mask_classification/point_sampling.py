"""Importance sampling of mask points (PointRend), with the random numbers from a given generator.

``transformers``' ``Mask2FormerLoss.sample_points_using_uncertainty`` computes the same thing but draws from
the global RNG; here the draws come from ``generator`` so that a test can replay the official ones.
"""

from __future__ import annotations

import torch
from transformers.models.mask2former.modeling_mask2former import sample_point


def uncertain_point_coords(
    logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """N×P×2 points in [0, 1]² for mask logits N×1×h×w.

    ``int(P · oversample_ratio)`` uniform candidates per mask; the ``int(importance_sample_ratio · P)`` most
    uncertain (logit closest to 0) are kept, and uniform points fill up to P (detectron2
    ``projects/PointRend/point_rend/point_features.py``, ``get_uncertain_point_coords_with_randomness``, with
    Mask2Former's uncertainty ``-|logit|``).
    """
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2, device=logits.device, generator=generator)
    uncertainty = -sample_point(logits, coords, align_corners=False).abs()  # N×1×P'
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1)[1]  # N×P_u
    idx = idx + num_sampled * torch.arange(n, dtype=torch.long, device=logits.device)[:, None]
    coords = coords.view(-1, 2)[idx.view(-1), :].view(n, num_uncertain, 2)
    if num_random > 0:
        extra = torch.rand(n, num_random, 2, device=logits.device, generator=generator)
        coords = torch.cat([coords, extra], dim=1)
    return coords
