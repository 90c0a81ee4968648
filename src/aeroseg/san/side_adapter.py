"""The side adapter network: a light ViT beside the frozen CLIP that proposes masks and attention biases.

SAN ``san/model/side_adapter/side_adapter.py``, ``RegionwiseSideAdapterNetwork`` on a timm
``VisionTransformer`` (``timm_wrapper.py``, ``vit_w240n6d8_patch16``: no [CLS] token, no final norm). Learnable
query tokens are put before the patch tokens; the position embedding (resized bicubically to the input grid,
the queries' own in front) is added before every block; CLIP features are fused into the patch tokens before
block 1 and after the blocks ``fusion_map`` names; the blocks in ``deep_supervision`` are decoded into masks
and biases. The blocks are ``transformers``' ``ViTLayer`` (pre-norm attention and MLP, as timm's ``Block``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViTConfig
from transformers.models.vit.modeling_vit import ViTLayer

from aeroseg.san.clip_features import ClipFeatures
from aeroseg.san.feature_fusion import FeatureFusion
from aeroseg.san.mask_decoder import MaskDecoder

Proposals = list[tuple[torch.Tensor, list[torch.Tensor]]]  # per decoded block: masks, attention biases


class SideAdapterNetwork(nn.Module):
    """image B×3×H×W (normalised) + CLIP features → per decoded block, mask logits B×Q×h×w and biases."""

    def __init__(
        self,
        *,
        width: int,
        depth: int,
        heads: int,
        patch: int,
        mlp_ratio: float,
        image_size: int,
        num_queries: int,
        clip_width: int,
        fusion: Sequence[tuple[int, int]],
        deep_supervision: Sequence[int],
        decoder: MaskDecoder,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.grid = image_size // patch
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, width))
        self.query_embed = nn.Parameter(torch.zeros(1, num_queries, width))
        self.query_pos_embed = nn.Parameter(torch.zeros(1, num_queries, width))
        vit = ViTConfig(
            hidden_size=width,
            num_attention_heads=heads,
            intermediate_size=int(width * mlp_ratio),
            layer_norm_eps=1e-6,
            qkv_bias=True,
            hidden_act="gelu",
            attn_implementation="sdpa",
        )
        self.blocks = nn.ModuleList(ViTLayer(vit) for _ in range(depth))
        self.fusion_source = {side: clip for clip, side in fusion}
        self.fusion_layers = nn.ModuleDict(
            {f"layer_{side}": FeatureFusion(clip_width, width) for _, side in fusion}
        )
        self.deep_supervision = tuple(deep_supervision)
        self.mask_decoder = decoder
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ViT initialisation (truncated normal 0.02) and SAN's query initialisation (normal 0.02)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.query_embed, std=0.02)
        nn.init.normal_(self.query_pos_embed, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor, clip: ClipFeatures, *, all_blocks: bool = True) -> Proposals:
        """Decode every ``deep_supervision`` block (``all_blocks``, training) or only the last (inference)."""
        x = self.patch_embed(image)  # B×D×h×w
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # B×L×D
        n = x.shape[1]
        pos = self.pos_embed
        if pos.shape[1] != n:
            pos = pos.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
            pos = (
                F.interpolate(pos, size=grid, mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
            )
        b = x.shape[0]
        pos = torch.cat([self.query_pos_embed.expand(b, -1, -1), pos.expand(b, -1, -1)], dim=1)
        x = torch.cat([self.query_embed.expand(b, -1, -1), x], dim=1) + pos  # B×(Q+L)×D
        x = self._fuse(0, x, clip, grid)
        decoded = []
        for i, block in enumerate(self.blocks, start=1):
            x = self._fuse(i, block(x), clip, grid)
            if i in self.deep_supervision:
                decoded.append((x[:, :-n], x[:, -n:].transpose(1, 2).reshape(b, -1, *grid)))
            if i < len(self.blocks):
                x = x + pos
        if not all_blocks:
            decoded = decoded[-1:]
        return [self.mask_decoder(query, patches) for query, patches in decoded]

    def _fuse(self, index: int, x: torch.Tensor, clip: ClipFeatures, grid: tuple[int, int]) -> torch.Tensor:
        """After side block ``index`` (0: before the first), add the CLIP layer ``fusion_map`` names."""
        if index not in self.fusion_source:
            return x
        n = grid[0] * grid[1]
        fused = self.fusion_layers[f"layer_{index}"](x[:, -n:], clip.spatial(self.fusion_source[index]), grid)
        return torch.cat([x[:, :-n], fused], dim=1)
