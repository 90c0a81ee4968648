"""CLIP guidance (docs/model.md §3, the Baseline, CAT-Seg and OVRS): CLIP's own features guide the refinement and the
decoder when no SAM runs. As CAT-Seg's code (``CATSeg.upsample1/2``): the raw dense CLIP embedding of the
unrotated image guides spatial refinement, and two intermediate vision blocks, brought up by learned transposed
convolutions (×2 and ×4), guide decoder stages 1 and 2."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.modeling.guidance_encoder import GuidanceFeatures
from aeroseg.precision import fp32

_normalize, _upsample = fp32(F.normalize), fp32(F.interpolate)  # in fp32 under autocast (docs/model.md §12)


class ClipGuidance(nn.Module):
    """Guidance from CLIP features computed by the backbone; it runs no encoder of its own.

    Args:
        embed_dim: C, the width of the dense CLIP embedding (final guidance).
        hidden_size: D, the width of the vision blocks.
        upsample_dims: widths of the learned ×2 and ×4 upsamplers (CAT-Seg: 256, 128); ``None`` passes the
            blocks on unlearned (the first block at h×w, the second resized to 2h×2w).
        normalized: L2-normalise the final guidance (CAT-Seg: raw).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        hidden_size: int,
        upsample_dims: Sequence[int] | None = (256, 128),
        normalized: bool = False,
    ) -> None:
        super().__init__()
        self.final_dim = embed_dim
        self.normalized = normalized
        self.upsample1 = self.upsample2 = None
        if upsample_dims is None:
            self.decoder_dims = (hidden_size, hidden_size)
        else:
            self.upsample1 = nn.ConvTranspose2d(hidden_size, upsample_dims[0], kernel_size=2, stride=2)
            self.upsample2 = nn.ConvTranspose2d(hidden_size, upsample_dims[1], kernel_size=4, stride=4)
            self.decoder_dims = tuple(upsample_dims)

    def forward(self, dense: torch.Tensor, intermediate: Sequence[torch.Tensor]) -> GuidanceFeatures:
        """dense: B×C×h×w raw CLIP embedding; intermediate: two B×D×h×w block grids (shallower first) →
        final B×C×h×w, decoder [B×C_1×2h×2w, B×C_2×4h×4w] (learned) or [B×D×h×w, B×D×2h×2w]."""
        final = _normalize(dense, dim=1) if self.normalized else dense
        coarse, fine = intermediate
        if self.upsample1 is not None and self.upsample2 is not None:
            return GuidanceFeatures(final=final, decoder=[self.upsample1(coarse), self.upsample2(fine)])
        h, w = fine.shape[-2:]
        fine = _upsample(fine, size=(2 * h, 2 * w), mode="bilinear", align_corners=False)
        return GuidanceFeatures(final=final, decoder=[coarse, fine])
