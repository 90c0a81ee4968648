"""Mask recognition: [SOS] tokens in the frozen CLIP's deeper layers, steered by the attention biases.

SAN ``san/model/clip_utils/visual.py``, ``RecWithAttnbiasHead`` (``REC_CROSS_ATTN`` False, ``SOS_TOKEN_FORMAT``
cls_token): Q copies of the [CLS] token of the last shallow layer are put before its tokens; in every deeper
layer each [SOS] token attends to itself and to the patches with the side adapter's bias (downsampled to the
CLIP grid), and to nothing else (bias -100), while [CLS] and patches ignore the [SOS] tokens (-100), so
they run exactly as in CLIP. The [SOS] outputs through ``ln_post`` and the projection are the mask embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BLOCKED = -100.0  # the official additive bias for "does not attend"


def downsample(bias: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    """N×C×H×W → N×C×h×w (SAN ``attn_helper.py``, ``downsample2d``)."""
    if method == "max":
        return F.adaptive_max_pool2d(bias, output_size=size)
    if method == "avg":
        return F.adaptive_avg_pool2d(bias, output_size=size)
    return F.interpolate(bias, size=size, mode=method, align_corners=None if method == "nearest" else False)


class MaskRecognitionHead(nn.Module):
    """Mask embeddings B×Q×D from the shallow CLIP tokens and the attention biases.

    Args:
        layers: CLIP's deeper encoder layers (after ``feature_last_layer``).
        post_layernorm: CLIP's ``ln_post``.
        projection: CLIP's visual projection (width → embedding).
        num_heads: attention heads of the CLIP layers.
        downsample: how the biases are brought to the CLIP grid ("max", "avg" or an interpolation mode).
    """

    def __init__(
        self,
        layers: nn.ModuleList,
        post_layernorm: nn.LayerNorm,
        projection: nn.Linear,
        *,
        num_heads: int,
        downsample: str = "max",
    ) -> None:
        super().__init__()
        self.layers = layers
        self.post_layernorm = post_layernorm
        self.projection = projection
        self.num_heads = num_heads
        self.downsample_method = downsample

    def attention_mask(self, bias: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """bias B×H'×Q×h'×w' (H' = 1 or the CLIP heads) → additive mask B×heads×(Q+1+L)×(Q+1+L)."""
        b, heads, q = bias.shape[:3]
        if heads not in (1, self.num_heads):
            raise ValueError(f"{heads} attention-bias heads for CLIP layers of {self.num_heads} heads")
        bias = downsample(bias.flatten(1, 2), grid, self.downsample_method).reshape(b, heads, q, -1)
        bias = bias.expand(b, self.num_heads, q, bias.shape[-1])
        n = q + 1 + bias.shape[-1]
        mask = bias.new_zeros(n, n)
        mask[:, :q] = BLOCKED  # nobody attends to the [SOS] tokens ...
        mask[torch.arange(q), torch.arange(q)] = 0  # ... but each to itself
        mask[:q, q] = BLOCKED  # [SOS] tokens do not attend to [CLS]
        mask = mask.expand(b, self.num_heads, n, n).clone()
        mask[:, :, :q, q + 1 :] = bias
        return mask

    def forward(
        self, tokens: torch.Tensor, grid: tuple[int, int], attn_biases: list[torch.Tensor]
    ) -> torch.Tensor:
        """tokens: B×(1+L)×C of the last shallow layer; attn_biases: one B×H'×Q×h'×w' for every deeper
        layer, or one for all → L2-normalised mask embeddings B×Q×D."""
        if len(attn_biases) not in (1, len(self.layers)):
            raise ValueError(f"{len(attn_biases)} attention biases for {len(self.layers)} deeper CLIP layers")
        masks = [self.attention_mask(bias, grid).to(tokens.dtype) for bias in attn_biases]
        q = attn_biases[0].shape[2]
        x = torch.cat([tokens[:, :1].expand(-1, q, -1), tokens], dim=1)  # B×(Q+1+L)×C
        for i, layer in enumerate(self.layers):
            x = layer(x, masks[i if len(masks) > 1 else 0])
        sos = self.post_layernorm(x[:, :q])
        return F.normalize(self.projection(sos), dim=-1)
