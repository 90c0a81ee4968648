"""The whole image through the frozen pretrained CLIP: the semantic prior SCAN integrates and the context its
contextual shift puts into the regions.

SCAN ``ovseg_model.py`` (``SCAN.forward``) and its open_clip ``VisionTransformer.forward(get_embedding=True)``:
the image normalised with CLIP's mean and std, zero-padded like the backbone's input, resized (nearest) to
224² and run through ``original_clip`` (a copy of the pretrained image tower that stays frozen); kept: the
patch tokens of some layers, the [CLS] token after each layer, and the image embedding (``ln_post`` of the
last [CLS], projected). Built on ``transformers``' ``CLIPVisionModel`` parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.clip.modeling_clip import CLIPVisionModel


@dataclass
class GlobalClipFeatures:
    """patch_tokens[layer]: B×C×g×g maps of the ``patch_layers``; cls_tokens[layer]: B×C after each of the
    ``cls_layers``; embedding: B×D, the image embedding (L2-normalised)."""

    patch_tokens: dict[int, torch.Tensor]
    cls_tokens: dict[int, torch.Tensor]
    embedding: torch.Tensor


class GlobalClip(nn.Module):
    """The pretrained CLIP image tower (``original_clip``), frozen.

    Args:
        vision_model: the CLIP image transformer; visual_projection: its projection to the joint space.
    """

    def __init__(self, vision_model: CLIPVisionModel, visual_projection: nn.Linear) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection

    @property
    def image_size(self) -> int:
        return self.vision_model.embeddings.image_size

    def forward(
        self, images: torch.Tensor, *, patch_layers: Sequence[int], cls_layers: Sequence[int]
    ) -> GlobalClipFeatures:
        """images: B×3×H×W, CLIP-normalised (any size: resized to the tower's input, nearest)."""
        v = self.vision_model
        size = self.image_size
        x = F.interpolate(images, size=(size, size))  # nearest, as the official F.interpolate default
        x = v.pre_layrnorm(v.embeddings(x))  # B×(1+g²)×C
        grid = size // v.embeddings.patch_size
        patch_tokens, cls_tokens = {}, {}
        for depth, layer in enumerate(v.encoder.layers, start=1):
            x = layer(x, None)
            if depth in patch_layers:
                patch_tokens[depth] = x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, grid, grid)
            if depth in cls_layers:
                cls_tokens[depth] = x[:, 0]
        embedding = F.normalize(self.visual_projection(v.post_layernorm(x[:, 0])), dim=-1)
        return GlobalClipFeatures(patch_tokens, cls_tokens, embedding)
