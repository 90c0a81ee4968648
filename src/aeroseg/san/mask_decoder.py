"""Mask proposals and attention biases from the side adapter's query and patch tokens.

SAN ``san/model/side_adapter/side_adapter.py``, ``MLPMaskDecoder``: three MLPs (``san/model/layers.py``,
``MLP``) embed the queries, the pixels and the attention-bias features; a mask proposal is a query embedding
dotted with every pixel embedding, an attention bias the same with the bias features of each head and layer,
optionally through a learned affine map (``RESCALE_ATTN_BIAS``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``num_layers`` affine maps with ReLU between them; ``dense`` uses 1×1 convolutions on B×C×H×W."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, *, dense: bool = False):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        affine = (lambda n, k: nn.Conv2d(n, k, 1)) if dense else nn.Linear
        self.layers = nn.ModuleList(affine(n, k) for n, k in zip(dims, outs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


class MaskDecoder(nn.Module):
    """queries B×Q×D, patches B×D×h×w → mask logits B×Q×h×w and ``num_layers`` biases B×heads×Q×h×w."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_heads: int,
        num_layers: int,
        embed_channels: int,
        mlp_channels: int,
        mlp_layers: int,
        rescale: bool,
    ) -> None:
        super().__init__()
        self.num_heads, self.num_layers = num_heads, num_layers
        self.query_mlp = MLP(in_channels, mlp_channels, embed_channels, mlp_layers)
        self.pix_mlp = MLP(in_channels, mlp_channels, embed_channels, mlp_layers, dense=True)
        bias_channels = embed_channels * num_heads * num_layers
        self.attn_mlp = MLP(in_channels, mlp_channels, bias_channels, mlp_layers, dense=True)
        self.bias_scaling = nn.Linear(1, 1) if rescale else nn.Identity()

    def forward(self, query: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        query = self.query_mlp(query)  # B×Q×E
        pix = self.pix_mlp(x)  # B×E×h×w
        b, c, h, w = pix.shape
        masks = torch.einsum("bqc,bchw->bqhw", query, pix)
        attn = self.attn_mlp(x).reshape(b, self.num_layers, self.num_heads, c, h, w)
        bias = torch.einsum("bqc,blnchw->blnqhw", query, attn)  # B×layers×heads×Q×h×w
        bias = self.bias_scaling(bias[..., None]).squeeze(-1)
        return masks, list(bias.unbind(1))
