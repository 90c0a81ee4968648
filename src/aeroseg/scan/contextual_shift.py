"""The contextual shift: mask regions recognised by CLIP with part of their background replaced by the whole
image's context.

SCAN's open_clip ``VisionTransformer.forward(bg_add_cls=True)`` (``open_clip_training/src/open_clip/
transformer.py``): a region's tokens are foreground where any pixel of its patch is in the mask; after each
of the ``replace_layers``, ``int(replace_ratio · n)`` of its n background tokens, drawn with Python's
``random.sample``, become the [CLS] token of the whole image at that layer (from :class:`GlobalClip`); the
region's embedding is ``ln_post`` of its final [CLS], projected and L2-normalised. The draws are made in the
official order (per replaced layer, per region), so a seeded generator replays the official ones.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.clip.modeling_clip import CLIPVisionModel


class ContextualShiftClip(nn.Module):
    """The region classifier's CLIP image tower (``clip_model.visual``: in the released model the
    contextual-shift finetuned CLIP), frozen.

    Args:
        vision_model: the CLIP image transformer; visual_projection: its projection to the joint space.
        replace_ratio: share of background tokens replaced; replace_layers: after which layers (1-based).
    """

    def __init__(
        self,
        vision_model: CLIPVisionModel,
        visual_projection: nn.Linear,
        *,
        replace_ratio: float,
        replace_layers: Sequence[int],
    ) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection
        self.replace_ratio = replace_ratio
        self.replace_layers = tuple(replace_layers)

    def forward(
        self,
        regions: torch.Tensor,
        masks: torch.Tensor,
        context: dict[int, torch.Tensor],
        rng: random.Random,
    ) -> torch.Tensor:
        """regions V×3×S×S (CLIP-normalised, S the tower's input), masks V×1×S×S in {0, 1}, context[layer] the
        image's [CLS] token (C) after each replaced layer -> V×D region embeddings, L2-normalised."""
        v = self.vision_model
        if regions.shape[0] == 0:  # no proposal above the threshold
            return regions.new_zeros(0, self.visual_projection.out_features)
        background = F.max_pool2d(masks.float(), v.embeddings.patch_size).flatten(1) == 0  # V×g²
        x = v.pre_layrnorm(v.embeddings(regions))  # V×(1+g²)×C
        for depth, layer in enumerate(v.encoder.layers, start=1):
            x = layer(x, None)
            if depth in self.replace_layers:
                x = x.clone()
                for r in range(x.shape[0]):
                    tokens = torch.nonzero(background[r]).flatten()  # in token order, as the official
                    total = tokens.numel()
                    chosen = rng.sample(range(total), int(self.replace_ratio * total))
                    if chosen:
                        x[r, 1 + tokens[chosen]] = context[depth].to(x.dtype)
        return F.normalize(self.visual_projection(v.post_layernorm(x[:, 0])), dim=-1)
