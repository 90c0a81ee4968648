"""SED's feature aggregation module (paper Sec. 3.2, FAM): spatial-level fusion by a large-kernel ConvNeXt block,
then class-level fusion by linear attention across classes (``Up.cnext`` and ``Up.attention`` of
``sed/modeling/transformer/model.py``, with ``convnext.py``'s ``ConvNextBlock``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelsLastLayerNorm(nn.Module):
    """LayerNorm over the last axis, eps 1e-6 (SED's ``convnext.py`` ``LayerNorm``, channels_last).

    Deliberately not an ``nn.LayerNorm``: the official optimizer decays every tensor that is not in a
    ``torch.nn`` normalisation module, and SED's own LayerNorm is not one.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class SpatialFusion(nn.Module):
    """ConvNeXt block with a ``kernel_size`` depthwise convolution and layer scale initialised to 1."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = ChannelsLastLayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: N×C×h×w → N×C×h×w."""
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (N, h, w, C)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Linear attention with the elu + 1 feature map (Katharopoulos et al. 2020; SED's ``LinearAttention``).

    q, k, v: N×L×H×D → N×L×H×D. As SED, values are divided by L before the key-value product and the result
    multiplied by L again (its guard against fp16 overflow).
    """
    q, k = F.elu(q) + 1, F.elu(k) + 1
    length = v.shape[1]
    kv = torch.einsum("nshd,nshv->nhdv", k, v / length)  # (N, H, D, D)
    z = 1 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(dim=1)) + eps)  # (N, L, H)
    return torch.einsum("nlhd,nhdv,nlh->nlhv", q, kv, z) * length


class ClassFusion(nn.Module):
    """Transformer layer across the classes of every (pooled) position (SED's ``ClassTransformerLayer``).

    The grid is average-pooled by ``pool`` (training) or ``pool_eval`` (eval mode), every position attends over
    its T classes (pre-norm linear attention, then an MLP), the result is upsampled back (bilinear,
    align_corners) and added to the input.
    """

    def __init__(
        self, dim: int, *, num_heads: int, pool: tuple[int, int], pool_eval: tuple[int, int]
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pool, self.pool_eval = tuple(pool), tuple(pool_eval)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×T×h×w → B×C×T×h×w."""
        B, C, T, h, w = x.shape
        pooled = F.avg_pool2d(
            x.transpose(1, 2).reshape(B * T, C, h, w), self.pool if self.training else self.pool_eval
        )
        hp, wp = pooled.shape[-2:]
        tokens = (
            pooled.view(B, T, C, hp, wp).permute(0, 3, 4, 1, 2).reshape(B * hp * wp, T, C)
        )  # (B·hp·wp, T, C)
        tokens = tokens + self._attend(self.norm1(tokens))
        tokens = tokens + self.mlp(self.norm2(tokens))
        tokens = tokens.view(B, hp, wp, T, C).permute(0, 3, 4, 1, 2).reshape(B * T, C, hp, wp)
        up = F.interpolate(tokens, size=(h, w), mode="bilinear", align_corners=True)
        return x + up.view(B, T, C, h, w).transpose(1, 2)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        N, L, C = x.shape
        q, k, v = (proj(x).view(N, L, self.num_heads, -1) for proj in (self.q, self.k, self.v))
        return linear_attention(q, k, v).reshape(N, L, C)


class FeatureAggregation(nn.Module):
    """Spatial then class-level fusion of the per-class features of a decoder stage."""

    def __init__(
        self, dim: int, *, kernel_size: int, num_heads: int, pool: tuple[int, int], pool_eval: tuple[int, int]
    ) -> None:
        super().__init__()
        self.spatial = SpatialFusion(dim, kernel_size)
        self.classes = ClassFusion(dim, num_heads=num_heads, pool=pool, pool_eval=pool_eval)

    def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """x: (B·T)×C×h×w, ``batch`` = B → (B·T)×C×h×w."""
        x = self.spatial(x)
        BT, C, h, w = x.shape
        x = self.classes(x.view(batch, BT // batch, C, h, w).transpose(1, 2))  # (B, C, T, h, w)
        return x.transpose(1, 2).reshape(BT, C, h, w)
