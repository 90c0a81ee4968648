"""The semantic integration: CLIP's view of the whole image brought into the proposals' class embeddings.

SCAN ``ovseg_model.py`` (``SCAN.forward``) and ``frequency.py``: the patch tokens of some layers of the
pretrained CLIP, each through the low-frequency module (:class:`FrequencyModule`), concatenated along the
tokens and projected (``oriclip_mlp``: two linears) form a memory that the decoder's class embeddings attend to
(``fusion_decoder``: :class:`CrossAttentionFusion`); then every embedding, plus ``learnable_weight`` times the
image's CLIP embedding, passes alone (a sequence of one token) through a small transformer encoder
(``lightweight_transformer``). The result is compared with the text embeddings by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.scan.clip_features import GlobalClipFeatures


class FrequencyModule(nn.Module):
    """``LFM``: x + ifft2(conv(conv(fft2(x) · (1 - G_sigma)))), the spectrum as real and imaginary channels.

    G_sigma is a Gaussian of width sigma centred on the spectrum's (h // 2, w // 2) index (the unshifted
    spectrum, as the official); runs in float32.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2 * channels, 2 * channels, kernel_size=1)
        self.conv2 = nn.Conv2d(2 * channels, 2 * channels, kernel_size=1)

    def forward(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """x: B×C×h×w -> B×C×h×w."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            h, w = x.shape[-2:]
            y = torch.fft.fft2(x)
            yy, xx = torch.meshgrid(
                torch.arange(h, device=x.device, dtype=torch.float32),
                torch.arange(w, device=x.device, dtype=torch.float32),
                indexing="ij",
            )
            gaussian = torch.exp(-((yy - h // 2) ** 2 + (xx - w // 2) ** 2) / (2 * sigma**2))
            y = y * (1 - gaussian)
            y = self.conv2(F.relu(self.conv1(torch.cat([y.real, y.imag], dim=1))))
            real, imag = torch.chunk(y, 2, dim=1)
            return x + torch.fft.ifft2(torch.complex(real, imag), s=(h, w)).real


class CrossAttentionFusion(nn.Module):
    """``CA``: ``num_layers`` residual cross-attentions of the queries onto the memory, a LayerNorm between
    two (none after the last)."""

    def __init__(self, dim: int, num_layers: int, num_heads: int) -> None:
        super().__init__()
        self.attention = nn.ModuleList(
            nn.MultiheadAttention(dim, num_heads, batch_first=True) for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers - 1))

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """queries B×Q×D, memory B×N×D -> B×Q×D."""
        for i, attention in enumerate(self.attention):
            queries = queries + attention(queries, memory, memory, need_weights=False)[0]
            if i < len(self.norms):
                queries = self.norms[i](queries)
        return queries


class ClipProjection(nn.Module):
    """``oriclip_mlp``: two linears, no activation between (``frequency.py`` ``MLP``)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class SemanticIntegration(nn.Module):
    """Class embeddings B×Q×D and the whole image's CLIP features -> calibrated embeddings B×Q×D.

    Args:
        clip_width: the CLIP image tower's width (``MODEL.CLIP_VISION_DIM``); dim: ``MODEL.SCAN_DIM``.
        clip_layers / frequency_sigma: the CLIP layers fused and the sigma of each one's frequency module.
    """

    def __init__(
        self,
        *,
        clip_width: int,
        dim: int,
        clip_layers: Sequence[int],
        frequency_sigma: Sequence[float],
        fusion_layers: int,
        num_layers: int,
        num_heads: int,
        feedforward: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.clip_layers = tuple(clip_layers)
        self.frequency_sigma = tuple(frequency_sigma)
        self.frequency = FrequencyModule(clip_width)
        self.clip_projection = ClipProjection(clip_width, dim)
        self.fusion = CrossAttentionFusion(dim, fusion_layers, num_heads)
        layer = nn.TransformerEncoderLayer(dim, num_heads, feedforward, dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.learnable_weight = nn.Parameter(torch.tensor([0.1]))

    def memory(self, clip: GlobalClipFeatures) -> torch.Tensor:
        """B×(k·g²)×D: the frequency-filtered patch tokens of the k fused layers, projected (class-independent)."""
        tokens = [
            self.frequency(clip.patch_tokens[layer], sigma).flatten(2).transpose(1, 2)  # B×g²×C
            for layer, sigma in zip(self.clip_layers, self.frequency_sigma, strict=True)
        ]
        return self.clip_projection(torch.cat(tokens, dim=1))

    def forward(
        self, embeddings: torch.Tensor, memory: torch.Tensor, image_embedding: torch.Tensor
    ) -> torch.Tensor:
        """embeddings B×Q×D, memory B×N×D, image_embedding B×D (normalised) -> B×Q×D."""
        b, q, d = embeddings.shape
        x = self.fusion(embeddings, memory)
        x = x + self.learnable_weight * image_embedding[:, None]  # B×Q×D
        return self.transformer(x.reshape(b * q, 1, d)).reshape(b, q, d)  # every query alone
