"""Attention-aware upsampling decoder (paper Eq. 8–11, docs/model.md §7; attention from OVRS)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class AttentionAwareUpsampling(nn.Module):
    """One ×2 decoder stage.

    The class-wise features are upsampled by a transposed convolution; channel and spatial attention computed
    from their class average gate the guidance feature (``G' = ca⊙G + sa⊙G + G``), which is concatenated to
    every class and fused by two Conv3×3-GroupNorm-ReLU. With ``attention=False`` the guidance enters
    ungated (the CAT-Seg decoder).

    Args:
        in_dim: c_in of the class-wise features.
        guidance_in_dim: channels of the guidance feature before projection.
        guidance_dim: g.
        out_dim: c_out.
        fuse_bias: bias in the two fusing convolutions (CAT-Seg and OVRS have none).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        guidance_in_dim: int,
        guidance_dim: int,
        out_dim: int,
        attention: bool = True,
        activation: str = "none",
        fuse_bias: bool = False,
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_dim, in_dim - guidance_dim, kernel_size=2, stride=2)
        self.guidance_proj = nn.Sequential(nn.Conv2d(guidance_in_dim, guidance_dim, 3, padding=1), nn.ReLU())
        self.attention = attention
        if attention:
            self.channel_attention = nn.Conv2d(in_dim - guidance_dim, guidance_dim, 1)
            self.spatial_attention = nn.Conv2d(1, 1, 1)
        self.gate = torch.sigmoid if activation == "sigmoid" else (lambda t: t)
        self.fuse = nn.Sequential(
            nn.Conv2d(in_dim, out_dim, 3, padding=1, bias=fuse_bias),
            nn.GroupNorm(out_dim // 16, out_dim),
            nn.ReLU(),
            nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=fuse_bias),
            nn.GroupNorm(out_dim // 16, out_dim),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """x: B×c_in×T×h×w, guidance: B×C_g×h×w, or already B×C_g×2h×2w (CAT-Seg's learned CLIP upsamplers)
        → B×c_out×T×2h×2w (channels-last memory)."""
        B, c, T, h, w = x.shape
        y = self.up(_classes_as_batch(x))  # (B*T, c_in-g, 2h, 2w), Eq. 8
        y = y.permute(0, 2, 3, 1).view(B, T, 2 * h, 2 * w, -1)  # (B, T, 2h, 2w, c_in-g), channels last
        G = self.guidance_proj(guidance)
        if G.shape[-2:] != (2 * h, 2 * w):
            G = F.interpolate(G, size=(2 * h, 2 * w), mode="nearest")  # (B, g, 2h, 2w), Eq. 10
        if self.attention:
            A = y.mean(dim=1).permute(0, 3, 1, 2)  # class average, (B, c_in-g, 2h, 2w)
            ca = self.gate(self.channel_attention(A.mean(dim=(2, 3), keepdim=True)))  # (B, g, 1, 1), Eq. 9
            sa = self.gate(self.spatial_attention(A.mean(dim=1, keepdim=True)))  # (B, 1, 2h, 2w)
            G = ca * G + sa * G + G  # Eq. 11
        G = G.permute(0, 2, 3, 1)[:, None].expand(-1, T, -1, -1, -1)  # (B, T, 2h, 2w, g)
        y = torch.cat([y, G], dim=-1).flatten(0, 1)  # (B*T, 2h, 2w, c_in)
        y = self.fuse(y.permute(0, 3, 1, 2))  # (B*T, c_out, 2h, 2w), channels last
        return y.view(B, T, -1, 2 * h, 2 * w).transpose(1, 2)


def _classes_as_batch(x: torch.Tensor) -> torch.Tensor:
    """B×c×T×h×w → (B·T)×c×h×w in channels-last memory, in which the convolutions of few channels run faster
    (oneDNN on CPU: 1.2–3.1× per convolution here, see benchmarks/README.md)."""
    B, c, T, h, w = x.shape
    return x.transpose(1, 2).reshape(B * T, c, h, w).contiguous(memory_format=torch.channels_last)


class UpsamplingDecoder(nn.Module):
    """Two attention-aware stages (h → 2h → 4h) and a per-class Conv3×3 head."""

    def __init__(
        self,
        *,
        in_dim: int,
        guidance_in_dims: Sequence[int],
        guidance_dims: Sequence[int],
        out_dims: Sequence[int],
        attention: bool = True,
        activation: str = "none",
        fuse_bias: bool = False,
    ) -> None:
        super().__init__()
        dims = [in_dim, *out_dims]
        self.stages = nn.ModuleList(
            AttentionAwareUpsampling(
                in_dim=dims[i],
                guidance_in_dim=guidance_in_dims[i],
                guidance_dim=guidance_dims[i],
                out_dim=dims[i + 1],
                attention=attention,
                activation=activation,
                fuse_bias=fuse_bias,
            )
            for i in range(len(out_dims))
        )
        self.head = nn.Conv2d(dims[-1], 1, 3, padding=1)

    def forward(self, x: torch.Tensor, guidance: Sequence[torch.Tensor]) -> torch.Tensor:
        """x: B×d×T×h×w, guidance: one map per stage (stage i at 2^i·h, or already at its output size
        2^(i+1)·h) → logits B×T×4h×4w."""
        for stage, g in zip(self.stages, guidance, strict=True):
            x = stage(x, g)
        B, c, T, H, W = x.shape
        return self.head(_classes_as_batch(x)).view(B, T, H, W)
