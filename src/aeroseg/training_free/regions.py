"""Regions from SAM's image features, and class scores averaged within them.

SAM's final features separate objects and surfaces well but carry no class; CLIP's scores carry the
class but are noisy. Clustering SAM's features per image (k-means on cosine similarity) gives regions
whose mean CLIP score is a cleaner estimate for every pixel of the region. Sources: superpixel voting
(SLIC, Achanta et al. 2012, TPAMI) with a vision foundation model's features standing in for colour, as
ProxyCLIP (Lan et al. 2024, arXiv 2408.04883) aggregates CLIP over regions that SAM / DINO features delimit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.encoders.hiera_image_encoder import hiera_fpn_forward
from aeroseg.encoders.sam_image_encoder import sam_vit_forward
from aeroseg.modeling.guidance_encoder import IMAGENET_MEAN, IMAGENET_STD


class SamFeatures(nn.Module):
    """Frozen SAM (``SamVisionEncoder``) or SAM2 (``Sam2VisionModel``) image encoder → final features, run by
    the guidance encoders' own forwards (:mod:`aeroseg.encoders.sam_image_encoder`, ``hiera_image_encoder``).

    Args:
        encoder: the image encoder.
        kind: ``"sam"`` (the neck output, stride 16) or ``"sam2"`` (the stride-16 FPN level).
        image_size: input side (SAM: 1024).
    """

    def __init__(self, encoder: nn.Module, *, kind: str, image_size: int) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.kind = kind
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> SamFeatures:
        super().train(mode)
        self.encoder.eval()  # frozen: the same behaviour in both modes
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: B×3×H×W in [0, 1] → B×C×g×g L2-normalised features (g = image_size / 16)."""
        x = F.interpolate(images, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        if self.kind == "sam":
            feats = self.encoder.neck(sam_vit_forward(self.encoder, x, taps=())[0])
        else:
            feats = hiera_fpn_forward(self.encoder, x)[-1]
        return F.normalize(feats.float(), dim=1)


@torch.autocast("cuda", enabled=False)
@torch.autocast("cpu", enabled=False)
def kmeans_regions(features: torch.Tensor, clusters: int, iterations: int) -> torch.Tensor:
    """Cluster every image's feature vectors; deterministic (farthest-point seeds, Lloyd iterations).

    Args:
        features: B×C×h×w, L2-normalised along C.
    Returns:
        B×h×w long cluster ids in [0, clusters).
    """
    B, C, h, w = features.shape
    x = features.float().flatten(2).transpose(1, 2)  # (B, N, C)
    k = min(clusters, h * w)
    first = (x @ F.normalize(x.mean(1), dim=-1).unsqueeze(-1)).squeeze(-1).argmin(1)  # (B,) least typical
    seeds = [first]
    closest = (x * x[torch.arange(B), first].unsqueeze(1)).sum(-1)  # (B, N) max similarity to a seed
    for _ in range(k - 1):
        nxt = closest.argmin(1)
        seeds.append(nxt)
        closest = torch.maximum(closest, (x * x[torch.arange(B), nxt].unsqueeze(1)).sum(-1))
    centres = torch.stack([x[torch.arange(B), s] for s in seeds], 1)  # (B, k, C)
    labels = (x @ centres.transpose(1, 2)).argmax(-1)  # (B, N)
    for _ in range(iterations):
        onehot = F.one_hot(labels, k).to(x.dtype)  # (B, N, k)
        sums = onehot.transpose(1, 2) @ x  # (B, k, C)
        empty = onehot.sum(1) == 0  # (B, k): keep the old centre
        centres = torch.where(empty.unsqueeze(-1), centres, F.normalize(sums, dim=-1))
        labels = (x @ centres.transpose(1, 2)).argmax(-1)
    return labels.view(B, h, w)


def region_mean(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each pixel's score replaced by the mean score of its region.

    Args:
        scores: B×T×h×w; labels: B×h×w region ids (same h×w).
    Returns:
        B×T×h×w.
    """
    B, T = scores.shape[:2]
    flat = labels.flatten(1)  # (B, N)
    onehot = F.one_hot(flat, int(flat.max()) + 1).to(scores.dtype)  # (B, N, k)
    sums = scores.flatten(2) @ onehot  # (B, T, k)
    means = sums / onehot.sum(1).clamp_min(1).unsqueeze(1)
    return means.gather(2, flat.unsqueeze(1).expand(B, T, -1)).view_as(scores)
