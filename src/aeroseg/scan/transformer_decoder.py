"""The transformer decoder: Mask2Former's masked-attention decoder (``MultiScaleMaskedTransformerDecoder``, as
SCAN's ``open_vocab_mask2former_predictor.py`` builds it) as ``transformers``' ``Mask2FormerTransformerModule``,
with SCAN's class head.

Learned queries attend, layer by layer, to one of the three pixel-decoder maps (round robin) restricted to
their previous mask (cross-attention, then self-attention, then FFN, post-norm); after the learned queries and
after every layer the layer-normed queries give a mask (an MLP's embedding times the mask features) and, in
SCAN, a class *embedding* (``class_embed``: an MLP to the CLIP space, ``OpenVocabMask2FormerPredictor``)
instead of class logits. ``DEC_LAYERS`` layers, ``DEC_LAYERS + 1`` predictions.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerMLPPredictionHead,
    Mask2FormerTransformerModule,
)

from aeroseg.scan.config import SCANConfig
from aeroseg.scan.pixel_decoder import mask2former_config


class MaskedTransformerDecoder(nn.Module):
    """``forward(maps, mask_features)`` -> per prediction (the learned queries', then each layer's):
    class embeddings B×Q×embedding_dim and mask logits B×Q×H/4×W/4."""

    def __init__(self, config: SCANConfig) -> None:
        super().__init__()
        self.transformer = Mask2FormerTransformerModule(config.conv_dim, mask2former_config(config))
        self.class_embed = Mask2FormerMLPPredictionHead(
            config.hidden_dim, config.embed_hidden_dim, config.embedding_dim, config.embed_layers
        )
        self.reset_parameters()

    def forward(
        self, maps: list[torch.Tensor], mask_features: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        out = self.transformer(maps, mask_features)
        embeddings = [self.class_embed(h.transpose(0, 1)) for h in out.intermediate_hidden_states]  # B×Q×D
        return embeddings, list(out.masks_queries_logits)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialisation: Xavier for the attention and FFN matrices (``_reset_parameters`` of
        ``SelfAttentionLayer`` / ``CrossAttentionLayer`` / ``FFNLayer``, the q, k, v projections as one
        ``in_proj_weight``), zero attention biases (``nn.MultiheadAttention``), N(0, 1) query and level
        embeddings, torch's defaults elsewhere; 1×1 input projections ``c2_xavier_fill``."""
        for layer in self.transformer.decoder.layers:
            attention = layer.self_attn
            qkv = torch.empty(3 * attention.embed_dim, attention.embed_dim)
            nn.init.xavier_uniform_(qkv)
            for projection, part in zip(
                (attention.q_proj, attention.k_proj, attention.v_proj), qkv.chunk(3), strict=True
            ):
                projection.weight.copy_(part)
                nn.init.zeros_(projection.bias)
            nn.init.xavier_uniform_(attention.out_proj.weight)
            nn.init.zeros_(attention.out_proj.bias)
            nn.init.xavier_uniform_(layer.cross_attn.in_proj_weight)
            nn.init.xavier_uniform_(layer.cross_attn.out_proj.weight)
            nn.init.zeros_(layer.cross_attn.in_proj_bias)
            nn.init.zeros_(layer.cross_attn.out_proj.bias)
            nn.init.xavier_uniform_(layer.fc1.weight)
            nn.init.xavier_uniform_(layer.fc2.weight)
        for projection in self.transformer.input_projections:
            if isinstance(projection, nn.Conv2d):
                nn.init.kaiming_uniform_(projection.weight, a=1)
                nn.init.constant_(projection.bias, 0)
