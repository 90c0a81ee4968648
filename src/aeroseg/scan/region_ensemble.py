"""The mask-region CLIP ensemble: each proposal's region cropped from the image and classified by CLIP, and
that class distribution combined with the decoder's.

SCAN ``scan/modeling/clip_adapter/adapter.py`` (``MaskFormerClipAdapter._preprocess_image``) and ``utils.py``
(``crop_with_mask``, ``expand_box``): a proposal is valid where some pixel's mask probability exceeds
``mask_threshold``; its region is the bounding box of those pixels (detectron2 ``BitMasks.get_bounding_boxes``,
scaled by ``expand_ratio``), the pixels outside the binary mask filled with CLIP's mean colour, normalised
with CLIP's mean and std, resized to S² (bicubic; the mask nearest). ``ovseg_model.py``
(``SCAN.semantic_inference``): p = p_in^(1-w) · p_region^w over the valid proposals (p_region = 1 elsewhere),
where p_in is the softmax over the T classes and "no object" without the latter and p_region the softmax of the
region's logits over the T classes alone; w = 0 keeps the valid proposals with p_region only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # adapter.py PIXEL_MEAN (OpenAI CLIP's)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # adapter.py PIXEL_STD


@dataclass
class Regions:
    """pixels V×3×S×S (CLIP-normalised), masks V×1×S×S in {0, 1}, valid Q (bool): which proposals they are."""

    pixels: torch.Tensor
    masks: torch.Tensor
    valid: torch.Tensor


def mask_regions(
    image: torch.Tensor,
    mask_probs: torch.Tensor,
    *,
    threshold: float,
    fill: str,
    expand_ratio: float,
    size: int,
) -> Regions:
    """image 3×H×W in 0..255, mask_probs Q×H×W -> the regions of the valid proposals."""
    binary = mask_probs > threshold
    valid = binary.flatten(1).any(1)
    mean = torch.tensor(CLIP_MEAN, device=image.device).view(3, 1, 1) * 255
    std = torch.tensor(CLIP_STD, device=image.device).view(3, 1, 1) * 255
    fill_values = [255.0 * c for c in CLIP_MEAN] if fill == "mean" else [0.0, 0.0, 0.0]
    background = torch.tensor(fill_values, dtype=image.dtype, device=image.device).view(3, 1, 1)
    pixels, masks = [], []
    for mask in binary[valid].to(image.dtype):
        left, top, right, bottom = _box(mask, expand_ratio)
        crop, m = image[:, top:bottom, left:right], mask[None, top:bottom, left:right]
        region = (crop * m + (1 - m) * background - mean) / std
        pixels.append(F.interpolate(region[None], size=(size, size), mode="bicubic", align_corners=False))
        masks.append(F.interpolate(m[None], size=(size, size), mode="nearest"))
    if not pixels:
        empty = image.new_zeros(0, 3, size, size)
        return Regions(empty, empty[:, :1], valid)
    return Regions(torch.cat(pixels), torch.cat(masks), valid)


def _box(mask: torch.Tensor, expand_ratio: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a non-empty H×W mask: its bounding box scaled about its centre, the
    official way (float32, truncated to int, then clipped to the image)."""
    columns = torch.nonzero(mask.any(0)).flatten()
    rows = torch.nonzero(mask.any(1)).flatten()
    x1, y1, x2, y2 = torch.tensor(
        [columns[0], rows[0], columns[-1] + 1, rows[-1] + 1], dtype=torch.float32
    )  # BitMasks.get_bounding_boxes
    cx, cy, w, h = 0.5 * (x1 + x2), 0.5 * (y1 + y2), (x2 - x1) * expand_ratio, (y2 - y1) * expand_ratio
    box = [int(b) for b in (cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h)]
    height, width = mask.shape
    return max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)


def ensemble_probabilities(
    class_logits: torch.Tensor,
    region_logits: torch.Tensor,
    valid: torch.Tensor,
    weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """class_logits Q×(T+1), region_logits V×(T+1) of the V valid proposals -> (class probabilities Q'×T,
    which proposals they belong to: Q' = Q, or the valid ones when ``weight`` is 0)."""
    in_vocabulary = F.softmax(class_logits, dim=-1)[..., :-1]  # Q×T
    region = F.softmax(region_logits[:, :-1], dim=-1)  # V×T
    if weight == 0:
        return region, valid
    out_vocabulary = torch.ones_like(in_vocabulary)
    out_vocabulary[valid] = region.to(in_vocabulary.dtype)
    probs = in_vocabulary.pow(1 - weight) * out_vocabulary.pow(weight)
    return probs, torch.ones_like(valid)
