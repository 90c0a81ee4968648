"""SED's gradual fusion decoder (paper Sec. 3.2, Fig. 2): three stages of feature aggregation and skip-layer
fusion take the cost map embedding from stride 32 to stride 4 (``Aggregator`` of
``sed/modeling/transformer/model.py``: ``decoder1..3``, ``decoder_guidance_projection``,
``decoder_corr_guidance_projection``, ``head``; ``conv_decoder`` and, with category early rejection,
``fast_conv_decoder``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from aeroseg.sed.early_rejection import CategoryEarlyRejection
from aeroseg.sed.feature_aggregation import FeatureAggregation
from aeroseg.sed.skip_layer_fusion import SkipLayerFusion


class DecoderStage(nn.Module):
    """One stage: feature aggregation (FAM) at the input resolution, then skip-layer fusion (SFM) at twice it."""

    def __init__(
        self,
        *,
        in_dim: int,
        out_dim: int,
        skip_dim: int,
        kernel_size: int,
        num_heads: int,
        pool: tuple[int, int],
        pool_eval: tuple[int, int],
    ) -> None:
        super().__init__()
        self.aggregation = FeatureAggregation(
            in_dim, kernel_size=kernel_size, num_heads=num_heads, pool=pool, pool_eval=pool_eval
        )
        self.fusion = SkipLayerFusion(in_dim=in_dim, out_dim=out_dim, skip_dim=skip_dim)

    def forward(
        self, x: torch.Tensor, batch: int, encoder_skip: torch.Tensor, cost_skip: torch.Tensor
    ) -> torch.Tensor:
        """x: (B·T)×C×h×w → (B·T)×out_dim×2h×2w."""
        return self.fusion(self.aggregation(x, batch), encoder_skip, cost_skip)


class GradualFusionDecoder(nn.Module):
    """Cost map embedding → per-class logits at 8× its resolution, with the rejection heads' scores.

    Args:
        hidden_dim: width of the cost map embedding.
        dims: output widths of the three stages.
        encoder_dims: widths of the encoder features each stage fuses (res4, res3, res2).
        skip_dims: width each skip (encoder features, cost map) is projected to, per stage.
        cost_dims: input widths of the three cost map up-projections (P, then the previous skip width).
        kernel_sizes: ConvNeXt kernel of each stage.
        num_heads, pool, pool_eval: the class attention's (see :class:`ClassFusion`).
    """

    def __init__(
        self,
        *,
        hidden_dim: int,
        dims: Sequence[int],
        encoder_dims: Sequence[int],
        skip_dims: Sequence[int],
        cost_dims: Sequence[int],
        kernel_sizes: Sequence[int],
        num_heads: int,
        pool: tuple[int, int],
        pool_eval: tuple[int, int],
    ) -> None:
        super().__init__()
        in_dims = (hidden_dim, *dims[:-1])
        self.skip_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(d, g, kernel_size=3, padding=1), nn.ReLU())
            for d, g in zip(encoder_dims, skip_dims, strict=True)
        )
        self.cost_proj = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c, g, kernel_size=2, stride=2), nn.ReLU())
            for c, g in zip(cost_dims, skip_dims, strict=True)
        )
        self.stages = nn.ModuleList(
            DecoderStage(
                in_dim=i,
                out_dim=o,
                skip_dim=g,
                kernel_size=k,
                num_heads=num_heads,
                pool=pool,
                pool_eval=pool_eval,
            )
            for i, o, g, k in zip(in_dims, dims, skip_dims, kernel_sizes, strict=True)
        )
        self.rejection = CategoryEarlyRejection(in_dims)
        self.head = nn.Conv2d(dims[-1], 1, kernel_size=3, padding=1)

    def project_skips(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Encoder stage outputs [res2, res3, res4, res5] → the skips of the three stages [B×g_i×…] (res4,
        res3, res2 projected). As SED, the encoder features are detached: the skips train only the projection."""
        return [proj(level.detach()) for proj, level in zip(self.skip_proj, levels[2::-1], strict=True)]

    def forward(
        self, embedded: torch.Tensor, cost: torch.Tensor, skips: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """embedded: B×C×T×h×w; cost: B×P×T×h×w; skips: from :meth:`project_skips`
        → (logits B×T×8h×8w, rejection scores [B×T×h×w, B×T×2h×2w, B×T×4h×4w])."""
        B, C, T, h, w = embedded.shape
        x = embedded.transpose(1, 2).reshape(B * T, C, h, w)
        c = cost.transpose(1, 2).reshape(B * T, -1, h, w)
        scores = []
        for i, stage in enumerate(self.stages):
            scores.append(self.rejection.score(i, x.detach(), B))
            c = self.cost_proj[i](c)
            x = stage(x, B, skips[i], c)
        logits = self.head(x)
        return logits.view(B, T, *logits.shape[-2:]), scores

    def forward_rejecting(
        self, embedded: torch.Tensor, cost: torch.Tensor, skips: Sequence[torch.Tensor], topk: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Category early rejection for one image (B = 1, as SED evaluates): before each stage, only the classes
        kept by its rejection head go on → (logits 1×T'×8h×8w of the kept classes, their indices T')."""
        B, C, T, h, w = embedded.shape
        if B != 1:
            raise ValueError(f"category early rejection decodes one image at a time, got a batch of {B}")
        x = embedded[0].transpose(0, 1)  # (T, C, h, w)
        c = cost[0].transpose(0, 1)  # (T, P, h, w)
        index = torch.arange(T, device=x.device)
        for i, stage in enumerate(self.stages):
            keep = self.rejection.kept(self.rejection.score(i, x, 1), topk)
            x, c, index = x[keep], c[keep], index[keep]
            c = self.cost_proj[i](c)
            x = stage(x, 1, skips[i], c)
        logits = self.head(x)
        return logits.view(1, len(index), *logits.shape[-2:]), index
