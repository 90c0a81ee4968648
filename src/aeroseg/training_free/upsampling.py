"""Joint bilateral upsampling of class scores, guided by the image (Kopf et al., "Joint Bilateral
Upsampling", SIGGRAPH 2007).

SegEarth-OV upsamples CLIP's features with SimFeatUp, a joint bilateral upsampler whose kernels are
*trained*. The training-free model keeps the idea with the classic, untrained kernel: every output pixel
averages the low-resolution scores of its nearest cells, each weighted by a spatial Gaussian (distance to
the cell) times a range Gaussian (colour difference between the pixel and the cell's mean colour), so
that a score does not bleed across an edge of the image. The scores are linear in CLIP's features, so
upsampling them equals upsampling the features with the same kernel (and costs T, not C, channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Added to the range weight: a pixel unlike every nearby cell falls back to the spatial weights.
RANGE_FLOOR = 1e-6


def joint_bilateral_upsample(
    scores: torch.Tensor,
    guide: torch.Tensor,
    *,
    radius: int = 2,
    sigma_spatial: float = 1.0,
    sigma_range: float = 0.15,
) -> torch.Tensor:
    """Upsample ``scores`` to the size of ``guide``.

    Args:
        scores: B×T×h×w low-resolution scores.
        guide: B×3×H×W image in [0, 1].
        radius: each pixel uses the (2·radius)² nearest cells.
        sigma_spatial: spatial Gaussian, in cells. sigma_range: colour Gaussian, RGB distance.
    Returns:
        B×T×H×W float32.
    """
    scores, guide = scores.float(), guide.float()
    h, w = scores.shape[-2:]
    H, W = guide.shape[-2:]
    cells = F.adaptive_avg_pool2d(guide, (h, w))  # B×3×h×w mean colour of every cell
    u = (torch.arange(H, device=guide.device) + 0.5) * h / H - 0.5  # cell coordinates of pixel centres
    v = (torch.arange(W, device=guide.device) + 0.5) * w / W - 0.5
    u0, v0 = u.floor().long(), v.floor().long()
    num = scores.new_zeros(scores.shape[0], scores.shape[1], H, W)
    den = scores.new_zeros(scores.shape[0], 1, H, W)
    for dy in range(1 - radius, radius + 1):
        iy = u0 + dy
        wy = torch.exp(-((u - iy) ** 2) / (2 * sigma_spatial**2))  # (H,)
        iy = iy.clamp(0, h - 1)  # beyond the border: the border cell (replicate padding)
        for dx in range(1 - radius, radius + 1):
            ix = v0 + dx
            wx = torch.exp(-((v - ix) ** 2) / (2 * sigma_spatial**2))  # (W,)
            ix = ix.clamp(0, w - 1)
            colour = cells[:, :, iy][:, :, :, ix]  # B×3×H×W colour of the cell (dy, dx) away
            distance = ((guide - colour) ** 2).sum(1, keepdim=True)  # B×1×H×W
            weight = (torch.exp(-distance / (2 * sigma_range**2)) + RANGE_FLOOR) * (wy[:, None] * wx[None, :])
            num += weight * scores[:, :, iy][:, :, :, ix]
            den += weight
    return num / den
