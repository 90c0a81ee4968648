"""The pixel decoder: Mask2Former's ``MSDeformAttnPixelDecoder`` (``mask2former/modeling/pixel_decoder/
msdeformattn.py``, copied unchanged into SCAN) as ``transformers``' ``Mask2FormerPixelDecoder``.

res3-res5 are projected (1×1 conv + GroupNorm(32)), refined by multi-scale deformable self-attention layers
(sine position + level embeddings; 3 levels, 4 points; the pure-PyTorch ``multi_scale_deformable_attention``
of ``transformers``, the official ``ms_deform_attn_core_pytorch``), then an FPN adds res2 and a 1×1 conv
gives the mask features. As the official ``forward_features`` (``@autocast(enabled=False)``), it runs in
float32 under autocast. The initialisation is the official one (``_reset_parameters`` of the encoder and of
``MSDeformAttn``, ``c2_xavier_fill`` of the convolutions).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoder,
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
)

from aeroseg.scan.config import SCANConfig


def mask2former_config(config: SCANConfig) -> Mask2FormerConfig:
    """The ``transformers`` Mask2Former config of the pixel decoder and the transformer decoder of ``config``."""
    return Mask2FormerConfig(
        feature_size=config.conv_dim,
        mask_feature_size=config.mask_dim,
        hidden_dim=config.hidden_dim,
        encoder_feedforward_dim=config.encoder_feedforward,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers + 1,  # transformers builds decoder_layers - 1 layers
        num_attention_heads=config.num_heads,
        dropout=0.0,  # MASK_FORMER.DROPOUT; the official decoder layers hard-code 0.0 too
        dim_feedforward=config.dim_feedforward,
        pre_norm=config.pre_norm,
        enforce_input_projection=config.enforce_input_proj,
        common_stride=config.common_stride,
        num_queries=config.num_queries,
        feature_strides=[4, 8, 16, 32],
    )


class PixelDecoder(Mask2FormerPixelDecoder):
    """``forward([res2..res5])`` -> (mask features B×mask_dim×H/4×W/4, [3 maps B×conv_dim×h×w at strides 32,
    16, 8]) for the transformer decoder."""

    def __init__(self, config: SCANConfig, feature_channels: list[int]) -> None:
        super().__init__(mask2former_config(config), feature_channels)
        self.reset_parameters()

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:  # type: ignore[override]
        with torch.autocast(features[0].device.type, enabled=False):
            out = super().forward([f.float() for f in features])
        return out.mask_features, list(out.multi_scale_features)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialisation (``MSDeformAttnPixelDecoder.__init__``)."""
        for projection in self.input_projections:
            nn.init.xavier_uniform_(projection[0].weight, gain=1)
            nn.init.constant_(projection[0].bias, 0)
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.encoder.modules():
            if isinstance(module, Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
                _reset_deformable_attention(module)
        nn.init.normal_(self.level_embed)
        convs = [
            self.mask_projection,
            *(m[0] for m in (*self.lateral_convolutions, *self.output_convolutions)),
        ]
        for conv in convs:  # fvcore c2_xavier_fill
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.constant_(conv.bias, 0)


def _reset_deformable_attention(module: Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention) -> None:
    """``MSDeformAttn._reset_parameters``: offsets start on a circle of directions, 1..n_points steps long."""
    nn.init.constant_(module.sampling_offsets.weight, 0.0)
    thetas = torch.arange(module.n_heads, dtype=torch.float32) * (2.0 * math.pi / module.n_heads)
    grid = torch.stack([thetas.cos(), thetas.sin()], -1)
    grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(module.n_heads, 1, 1, 2)
    grid = grid.repeat(1, module.n_levels, module.n_points, 1)
    for i in range(module.n_points):
        grid[:, :, i, :] *= i + 1
    module.sampling_offsets.bias.copy_(grid.view(-1))
    nn.init.constant_(module.attention_weights.weight, 0.0)
    nn.init.constant_(module.attention_weights.bias, 0.0)
    nn.init.xavier_uniform_(module.value_proj.weight)
    nn.init.constant_(module.value_proj.bias, 0.0)
    nn.init.xavier_uniform_(module.output_proj.weight)
    nn.init.constant_(module.output_proj.bias, 0.0)
