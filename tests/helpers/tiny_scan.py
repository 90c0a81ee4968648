"""A tiny SCAN: the real modules at small sizes (Swin width 16, 10 queries, a 4-layer CLIP on 64² inputs), built
offline with random weights, so that a forward pass on a 128² image takes a fraction of a second."""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel

from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.scan import SCAN, SCANConfig, scan
from aeroseg.scan.swin_backbone import build_swin

TINY = dict(
    swin_embed_dim=16, swin_depths=(2, 2, 2, 2), swin_heads=(1, 1, 2, 2), swin_window=4, conv_dim=32,
    mask_dim=32, encoder_layers=1, encoder_feedforward=64, hidden_dim=32, num_queries=10, dim_feedforward=64,
    decoder_layers=3, embedding_dim=16, embed_hidden_dim=32, scan_dim=16, fusion_layers=2,
    integration_layers=2, integration_heads=2, integration_feedforward=32, clip_image_size=64,
    clip_layers=(2, 3, 4), replace_layers=(1, 3), prompt_templates=("a photo of a {}.", "an image of a {}."),
    train_num_points=256, test_size=128, swin_drop_path=0.1,
)  # fmt: skip


def tiny_clip(seed: int = 0) -> CLIPModel:
    """A random 4-layer CLIP (width 64, 1 head) on 64² images with patch 16, embedding 16; GELU."""
    torch.manual_seed(seed)
    common = dict(hidden_size=64, intermediate_size=128, num_attention_heads=1, hidden_act="gelu")
    config = CLIPConfig(
        text_config=dict(
            common, num_hidden_layers=2, eos_token_id=49407, bos_token_id=49406, pad_token_id=49407
        ),
        vision_config=dict(common, num_hidden_layers=4, patch_size=16, image_size=64),
        projection_dim=16,
    )
    return CLIPModel(config).eval()


def tiny_config(**overrides) -> SCANConfig:
    return scan().replace(**{**TINY, **overrides})


def tiny_scan(seed: int = 0, **overrides) -> SCAN:
    """The tiny SCAN in eval mode (random weights from ``seed``)."""
    config = tiny_config(**overrides)
    clip = tiny_clip(seed)
    return SCAN.assemble(config, clip, clip_tokenizer(), build_swin(config, pretrained=False)).eval()
