"""Each of the six components on its own: shapes, equalities with transformers, invariances."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel, Sam2Model, SamModel

from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.modeling.back_projection import SemanticBackProjection
from aeroseg.modeling.correlation import CorrelationFeatures
from aeroseg.modeling.correlation_refinement import ClassRefinement, CorrelationRefinement, SwinBlock
from aeroseg.modeling.guidance_encoder import Sam2GuidanceEncoder, SamGuidanceEncoder
from aeroseg.modeling.upsampling_decoder import UpsamplingDecoder
from aeroseg.modeling.vision_language_backbone import VisionLanguageBackbone

torch.manual_seed(0)


@pytest.fixture(scope="module")
def clip(tiny_backbones):
    return CLIPModel.from_pretrained(tiny_backbones["clip"]).eval()


def backbone(clip, **kwargs) -> VisionLanguageBackbone:
    args = dict(image_size=64, rotations=(0,), templates=("a photo of a {}",))
    return VisionLanguageBackbone(clip, clip_tokenizer(), **{**args, **kwargs}).eval()


def test_clip_image_path_matches_transformers_without_the_dense_trick(clip):
    vlb = backbone(clip, dense_last_block=False)
    images = torch.rand(2, 3, 50, 70)
    with torch.no_grad():
        ours, _ = vlb.encode_image(images)  # B×1×C×8×8
        pixels = (F.interpolate(images, size=(64, 64), mode="bilinear") - vlb.mean) / vlb.std
        hidden = clip.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        tokens = clip.visual_projection(clip.vision_model.post_layernorm(hidden))
        reference = F.normalize(tokens[:, 1:], dim=-1).transpose(1, 2).reshape(2, -1, 8, 8)
        torch.testing.assert_close(ours[:, 0], reference, rtol=1e-5, atol=1e-6)
        # and CLIP's own image embedding is the CLS token of the same path
        cls, _ = vlb._dense_tokens(pixels)
        expected = clip.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True)
        expected = getattr(expected, "pooler_output", expected)
        torch.testing.assert_close(cls[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_dense_last_block_has_no_token_mixing(clip):
    vlb = backbone(clip, dense_last_block=True)
    with torch.no_grad():
        x = torch.randn(1, 1 + 64, clip.config.vision_config.hidden_size)
        last = clip.vision_model.encoder.layers[-1]
        y = x.clone()
        y[:, 5] += 1.0  # change one patch token

        # the last block alone: only that token's output changes
        def run(t):
            v = last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(t))) + t[:, :1]
            return v + last.mlp(last.layer_norm2(v))

        changed = (run(y) - run(x)).abs().sum(-1)[0]
        assert changed[5] > 0 and changed[torch.arange(65) != 5].max() == 0
        assert vlb.dense_last_block


def test_rotations_are_rotated_back(clip):
    images = torch.rand(1, 3, 64, 64)
    rotated = backbone(clip, rotations=(0, 90, 180, 270))
    plain = backbone(clip, rotations=(0,))
    with torch.no_grad():
        emb, _ = rotated.encode_image(images)  # B×4×C×h×w
        for i, angle in enumerate((0, 90, 180, 270)):
            turned = torch.rot90(images, k=angle // 90, dims=(2, 3))
            single, _ = plain.encode_image(turned)
            back = torch.rot90(single[:, 0], k=-(angle // 90), dims=(2, 3))
            torch.testing.assert_close(emb[:, i], back, rtol=1e-5, atol=1e-6)


def test_text_is_one_batch_of_classes_times_templates(clip):
    vlb = backbone(clip, templates=("a {}", "an aerial image of a {}", "{} seen from above"))
    with torch.no_grad():
        text = vlb.encode_text(["road", "tree"])
        tok = clip_tokenizer()(["an aerial image of a tree"], return_tensors="pt")
        expected = clip.get_text_features(**tok)
        expected = getattr(expected, "pooler_output", expected)
    assert text.shape == (2, 3, clip.config.projection_dim)
    torch.testing.assert_close(text[1, 1], F.normalize(expected[0], dim=-1), rtol=1e-5, atol=1e-6)


def test_correlation_is_cosine_similarity_then_per_class_conv():
    corr = CorrelationFeatures(num_maps=2 * 3, hidden_dim=8, kernel_size=7)
    image = F.normalize(torch.randn(2, 2, 16, 5, 5), dim=2)
    text = F.normalize(torch.randn(4, 3, 16), dim=-1)
    out = corr(image, text)
    assert out.shape == (2, 8, 4, 5, 5)
    b, t = 1, 2
    maps = torch.stack([(image[b, r] * text[t, p][:, None, None]).sum(0) for r in range(2) for p in range(3)])
    torch.testing.assert_close(out[b, :, t], corr.conv(maps[None])[0], rtol=1e-5, atol=1e-6)


def test_window_attention_stays_in_its_window():
    block = SwinBlock(dim=8, guidance_dim=4, num_heads=2, window_size=4, shifted=False, mlp_ratio=2).eval()
    x, g = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 4)
    y = x.clone()
    y[0, 1, 1] += 1.0  # a token of the top-left 4×4 window
    with torch.no_grad():
        changed = (block(y, g) - block(x, g)).abs().sum(-1)[0] > 0
    assert changed[:4, :4].any() and not changed[4:, :].any() and not changed[:, 4:].any()


def test_shifted_windows_do_not_mix_opposite_edges():
    block = SwinBlock(dim=8, guidance_dim=4, num_heads=2, window_size=4, shifted=True, mlp_ratio=2).eval()
    x, g = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 4)
    y = x.clone()
    y[0, 0, 0] += 1.0  # top-left corner: rolled to the bottom-right window with other edges' tokens
    with torch.no_grad():
        changed = (block(y, g) - block(x, g)).abs().sum(-1)[0] > 0
    assert changed[:2, :2].any() and not changed[2:, :].any() and not changed[:, 2:].any()


@pytest.mark.parametrize("size", [5, 8, 13])
def test_swin_handles_grids_that_windows_do_not_divide(size):
    block = SwinBlock(dim=8, guidance_dim=4, num_heads=2, window_size=4, shifted=True, mlp_ratio=2)
    out = block(torch.randn(2, size, size, 8), torch.randn(2, size, size, 4))
    assert out.shape == (2, size, size, 8) and torch.isfinite(out).all()


def test_class_refinement_is_permutation_equivariant():
    block = ClassRefinement(dim=8, guidance_dim=4, num_heads=2, mlp_ratio=2, pool=2).eval()
    x, text = torch.randn(2, 8, 5, 6, 6), torch.randn(5, 4)
    perm = torch.tensor([4, 2, 0, 1, 3])
    with torch.no_grad():
        torch.testing.assert_close(
            block(x[:, :, perm], text[perm]), block(x, text)[:, :, perm], rtol=1e-5, atol=1e-6
        )


def test_refinement_guidance_enters_query_and_key_only():
    refine = CorrelationRefinement(
        dim=8, num_layers=2, guidance_in_dim=6, guidance_dim=4, text_in_dim=16, text_dim=4,
        spatial_heads=2, class_heads=2, window_size=4, mlp_ratio=2, class_pool=1,
    )  # fmt: skip
    attn = refine.spatial[0].blocks[0].attn
    assert attn.q.in_features == attn.k.in_features == 8 + 4 and attn.v.in_features == 8
    out = refine(torch.randn(1, 8, 3, 8, 8), torch.randn(1, 6, 8, 8), torch.randn(3, 2, 16))
    assert out.shape == (1, 8, 3, 8, 8)


def test_back_projection_maps_all_classes_to_the_target_width():
    bp = SemanticBackProjection(num_classes=3, hidden_dim=8, mlp_dim=16, out_dim=5)
    assert [m.in_features for m in bp.mlp if isinstance(m, torch.nn.Linear)] == [24, 16, 16]
    assert bp(torch.randn(2, 8, 3, 4, 4)).shape == (2, 5, 4, 4)
    with pytest.raises(ValueError, match="back_projection_classes"):
        bp(torch.randn(2, 8, 4, 4, 4))


@pytest.mark.parametrize("attention", [True, False])
def test_decoder_upsamples_twice(attention):
    decoder = UpsamplingDecoder(
        in_dim=32, guidance_in_dims=(6, 6), guidance_dims=(8, 8), out_dims=(32, 16), attention=attention
    )
    logits = decoder(torch.randn(2, 32, 3, 5, 5), [torch.randn(2, 6, 5, 5), torch.randn(2, 6, 10, 10)])
    assert logits.shape == (2, 3, 20, 20)
    assert hasattr(decoder.stages[0], "channel_attention") == attention


def test_sam_guidance_takes_the_configured_blocks_and_the_neck(tiny_backbones):
    sam = SamModel.from_pretrained(tiny_backbones["sam"]).vision_encoder.eval()
    encoder = SamGuidanceEncoder(sam, image_size=64, layers=(2, 3)).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = encoder(images, grid=4)  # SAM's own grid: 64 / 16 = 4
        reference = sam(encoder._pixels(images), output_hidden_states=True)
    torch.testing.assert_close(ours.final, reference.last_hidden_state)
    torch.testing.assert_close(ours.decoder[0], reference.hidden_states[2].permute(0, 3, 1, 2))
    assert ours.decoder[1].shape[-1] == 8  # the finer stage meets 2h
    assert not any(p.requires_grad for p in encoder.parameters())


def test_sam2_guidance_takes_the_three_fpn_levels(tiny_backbones):
    sam2 = Sam2Model.from_pretrained(tiny_backbones["sam2"]).vision_encoder.eval()
    encoder = Sam2GuidanceEncoder(sam2, image_size=64).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ours = encoder(images, grid=4)
        fine, mid, coarse = sam2(encoder._pixels(images)).fpn_hidden_states
    torch.testing.assert_close(ours.final, coarse)  # stride 16 at 64² is the 4×4 grid itself
    assert ours.decoder[0].shape[-1] == 4 and ours.decoder[1].shape[-1] == 8
    shrunk = F.interpolate(fine, size=(8, 8), mode="bilinear", antialias=True)  # guidance_resize "antialias"
    torch.testing.assert_close(ours.decoder[1], shrunk)
