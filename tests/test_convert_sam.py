"""Conversion of original segment-anything and SAM2 checkpoints.

Checkpoints come from ``tests/helpers/original_formats.py`` (original key layouts, random tensors). Converted
models are checked tensor by tensor and against plain-torch reference forwards of the original architectures.
"""

from pathlib import Path

import pytest
import torch
from transformers import Sam2Config

from aeroseg.convert.arch import load_arch_config
from aeroseg.convert.sam import load_original_sam
from aeroseg.convert.sam2 import _convert as _convert_sam2
from aeroseg.convert.sam2 import _matching_config as _matching_sam2_config
from aeroseg.convert.sam2 import load_original_sam2
from aeroseg.errors import CheckpointError
from tests.helpers import original_formats as orig
from tests.helpers.reference_models import check_coverage, sam2_image_encoder, sam_image_encoder, same


# ------------------------------------------------------------------------------------------------ SAM
def test_sam_conversion_matches_original(tmp_path):
    # ViT width 32, 3 blocks, 2 heads, window 3 on an 8×8 grid (padded to 9), block 1 global
    sd = orig.segment_anything_state_dict()
    torch.save(sd, tmp_path / "sam_vit_tiny.pth")
    model = load_original_sam(tmp_path / "sam_vit_tiny.pth")
    assert (
        model.config.vision_config.global_attn_indexes == [1] and model.config.vision_config.window_size == 3
    )
    hf = model.state_dict()
    pairs = [
        ("vision_encoder.layers.2.attn.rel_pos_w", "image_encoder.blocks.2.attn.rel_pos_w"),
        ("vision_encoder.neck.layer_norm2.bias", "image_encoder.neck.3.bias"),
        ("prompt_encoder.mask_embed.conv3.weight", "prompt_encoder.mask_downscaling.6.weight"),
        (
            "shared_image_embedding.positional_embedding",
            "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        ),
        (
            "mask_decoder.transformer.layers.1.layer_norm4.weight",
            "mask_decoder.transformer.layers.1.norm4.weight",
        ),
        ("mask_decoder.upscale_conv2.weight", "mask_decoder.output_upscaling.3.weight"),
        ("mask_decoder.iou_prediction_head.layers.0.bias", "mask_decoder.iou_prediction_head.layers.1.bias"),
        (
            "mask_decoder.output_hypernetworks_mlps.3.proj_out.weight",
            "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight",
        ),
    ]
    for new, old in pairs:
        same(hf[new], sd[old])
    weights = {k: v for k, v in sd.items() if k not in ("pixel_mean", "pixel_std")}
    check_coverage(
        model,
        weights,
        list(weights.values()),
        duplicated=hf["shared_image_embedding.positional_embedding"].numel(),
    )

    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.vision_encoder(images).last_hidden_state
        ref = sam_image_encoder(sd, images, heads=2, window=3, global_attn=(1,))
        masks = model(
            pixel_values=images, input_points=torch.tensor([[[[10.0, 20.0]]], [[[40.0, 5.0]]]])
        ).pred_masks
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert masks.shape == (2, 1, 3, 32, 32) and torch.isfinite(masks).all()


def test_sam_errors_are_one_line(tmp_path):
    sd = orig.segment_anything_state_dict()
    torch.save({k: v for k, v in sd.items() if k != "image_encoder.pos_embed"}, tmp_path / "no_pos.pth")
    torch.save({**sd, "image_encoder.blocks.0.attn.lora_a": torch.zeros(2, 2)}, tmp_path / "lora.pth")
    torch.save(orig.openai_clip_state_dict(), tmp_path / "clip.pth")
    for name, message in [
        ("no_pos.pth", "missing tensor"),
        ("lora.pth", "unexpected tensors"),
        ("clip.pth", "missing"),
    ]:
        with pytest.raises(CheckpointError, match=message) as info:
            load_original_sam(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)


# ----------------------------------------------------------------------------------------------- SAM2
HIERA = dict(heads=(1, 2, 4, 8), stages=(1, 2, 3, 1), windows=(4, 2, 3, 1), global_blocks=(4,))


def _tiny_sam2_config() -> Sam2Config:
    backbone = dict(
        model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[64, 64],
        blocks_per_stage=list(HIERA["stages"]), embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=list(HIERA["heads"]),
        global_attention_blocks=list(HIERA["global_blocks"]),
        window_size_per_stage=list(HIERA["windows"]), window_positional_embedding_background_size=[3, 3],
    )  # fmt: skip
    vision = dict(
        model_type="sam2_vision_model", backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
        fpn_hidden_size=16, backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
    )  # fmt: skip
    return Sam2Config(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16),
    )


def test_sam2_conversion_matches_original(tmp_path):
    ckpt = orig.sam2_checkpoint()  # Hiera dims 8..64, stages (1, 2, 3, 1), 64×64 images, FPN 16 channels
    torch.save(ckpt, tmp_path / "sam2.1_hiera_tiny.pt")
    model = load_original_sam2(tmp_path / "sam2.1_hiera_tiny.pt", config=_tiny_sam2_config())
    sd, hf = ckpt["model"], model.state_dict()
    pairs = [
        ("vision_encoder.backbone.pos_embed_window", "image_encoder.trunk.pos_embed_window"),
        ("vision_encoder.backbone.blocks.3.proj.weight", "image_encoder.trunk.blocks.3.proj.weight"),
        (
            "vision_encoder.backbone.blocks.5.mlp.proj_out.bias",
            "image_encoder.trunk.blocks.5.mlp.layers.1.bias",
        ),
        ("vision_encoder.neck.convs.2.weight", "image_encoder.neck.convs.2.conv.weight"),
        ("no_memory_embedding", "no_mem_embed"),
        (
            "mask_decoder.transformer.layers.0.cross_attn_image_to_token.o_proj.weight",
            "sam_mask_decoder.transformer.layers.0.cross_attn_image_to_token.out_proj.weight",
        ),
        (
            "mask_decoder.transformer.layers.1.mlp.proj_in.weight",
            "sam_mask_decoder.transformer.layers.1.mlp.layers.0.weight",
        ),
        (
            "mask_decoder.pred_obj_score_head.proj_out.bias",
            "sam_mask_decoder.pred_obj_score_head.layers.2.bias",
        ),
        ("mask_decoder.conv_s1.weight", "sam_mask_decoder.conv_s1.weight"),
    ]
    for new, old in pairs:
        same(hf[new], sd[old])
    points = [sd[f"sam_prompt_encoder.point_embeddings.{i}.weight"] for i in range(4)]
    same(hf["prompt_encoder.point_embed.weight"], torch.cat(points))
    image_part = {k: v for k, v in sd.items() if k not in orig.SAM2_VIDEO_KEYS}
    pe = hf["shared_image_embedding.positional_embedding"].numel()
    check_coverage(model, image_part, [*image_part.values(), torch.cat(points)], duplicated=pe)

    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fpn = model.vision_encoder(images).fpn_hidden_states
        ref = sam2_image_encoder(sd, images, **HIERA)
        out = model(pixel_values=images, input_points=torch.tensor([[[[10.0, 20.0]]], [[[40.0, 5.0]]]]))
    assert len(fpn) == 3
    for got, want in zip(fpn, ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert out.pred_masks.shape == (2, 1, 3, 16, 16) and torch.isfinite(out.pred_masks).all()


def test_sam2_base_plus_layout_matches_shipped_config_and_others_need_config(tmp_path):
    big = orig.sam2_checkpoint(
        embed_dim=112,
        stages=(2, 3, 16, 3),
        first_window=8,
        bkg=(14, 14),
        dim=256,
        mlp_dim=2048,
        device="meta",
    )["model"]
    config = _matching_sam2_config(_convert_sam2(big, Path("b+.pt")), Path("b+.pt"))
    assert config.to_dict() == load_arch_config("sam2-hiera-b+").to_dict()
    torch.save(orig.sam2_checkpoint(), tmp_path / "tiny.pt")
    torch.save(orig.segment_anything_state_dict(), tmp_path / "sam1.pth")
    for name, message in [("tiny.pt", "match none of the shipped SAM2"), ("sam1.pth", "unexpected tensors")]:
        with pytest.raises(CheckpointError, match=message) as info:
            load_original_sam2(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)
