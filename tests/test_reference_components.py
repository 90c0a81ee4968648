"""The CAT-Seg details of the shared components (their numbers against the official code are in
test_convert_catseg.py): class padding, pooling in training only, the residual form, the CLIP guidance."""

import pytest
import torch

from aeroseg.config import AerOSegConfig
from aeroseg.modeling.clip_guidance import ClipGuidance
from aeroseg.modeling.correlation_refinement import ClassRefinement, SpatialRefinement
from aeroseg.modeling.upsampling_decoder import UpsamplingDecoder


def _class_block(**kwargs) -> ClassRefinement:
    torch.manual_seed(0)
    block = ClassRefinement(dim=8, guidance_dim=4, num_heads=2, mlp_ratio=2, pool=2, **kwargs)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return block


@pytest.mark.parametrize("classes", [3, 8, 11, 20])  # below, at, and beyond one pad length (8)
def test_padding_tokens_keep_every_class_and_permutation_equivariance(classes):
    block = _class_block(pad_length=8).eval()
    x, text = torch.randn(1, 8, classes, 4, 4), torch.randn(classes, 4)
    perm = torch.randperm(classes)
    with torch.no_grad():
        out = block(x, text)
        torch.testing.assert_close(block(x[:, :, perm], text[perm]), out[:, :, perm], rtol=1e-5, atol=1e-5)
    assert out.shape == x.shape


def test_padding_tokens_take_part_in_the_attention():
    block = _class_block(pad_length=8).eval()
    x, text = torch.randn(1, 8, 3, 4, 4), torch.randn(3, 4)
    with torch.no_grad():
        before = block(x, text)
        block.padding_tokens.add_(torch.linspace(-1, 1, 8))  # (LayerNorm ignores a constant)
        after = block(x, text)
        assert not torch.allclose(before, after)
        block.padding_guidance.add_(1.0)
        assert not torch.allclose(after, block(x, text))
        unpadded = _class_block(pad_length=0).eval()
        unpadded.load_state_dict({k: v for k, v in block.state_dict().items() if "padding" not in k})
        assert not torch.allclose(unpadded(x, text), block(x, text))


def test_classes_beyond_a_multiple_of_the_pad_length_see_the_same_padding_count():
    """T = 11 with pad length 8 runs over 16 tokens: equal to T = 11 plus 5 explicit copies of the padding."""
    block = _class_block(pad_length=8).eval()
    x, text = torch.randn(1, 8, 11, 4, 4), torch.randn(11, 4)
    plain = _class_block(pad_length=0).eval()
    plain.load_state_dict({k: v for k, v in block.state_dict().items() if "padding" not in k})
    pad_x = block.padding_tokens.detach().view(1, 8, 1, 1, 1).expand(1, 8, 5, 4, 4)
    pad_t = block.padding_guidance.detach().expand(5, 4)
    with torch.no_grad():
        expected = plain(torch.cat([x, pad_x], 2), torch.cat([text, pad_t]))[:, :, :11]
        torch.testing.assert_close(block(x, text), expected, rtol=1e-5, atol=1e-5)


def test_class_pooling_in_training_only_and_the_reference_residual():
    block = _class_block()
    x, text = torch.randn(1, 8, 3, 4, 4), torch.randn(3, 4)
    with torch.no_grad():
        trained, evaluated = block.train()(x, text), block.eval()(x, text)
        pooled_eval = _class_block(pool_eval=2).eval()(x, text)
    assert not torch.allclose(trained, evaluated)
    torch.testing.assert_close(trained, pooled_eval)  # eval with pool_eval=2 is the training computation
    # without pooling, the reference block is x + (x + attn + mlp): twice the input plus the update
    block.eval()
    y = x.permute(0, 3, 4, 2, 1).reshape(16, 3, 8)
    with torch.no_grad():
        update = block.attn(block.norm1(y), text)
        update = y + update
        update = update + block.mlp(block.norm2(update))
        expected = x + update.view(1, 4, 4, 3, 8).permute(0, 4, 3, 1, 2)
        torch.testing.assert_close(evaluated, expected, rtol=1e-5, atol=1e-6)


def test_reference_defaults_and_their_alternatives():
    config = AerOSegConfig()
    assert (config.class_pad_length, config.class_pool, config.class_pool_eval) == (256, 2, 1)
    assert (
        config.class_residual == "reference"
        and config.class_align_corners
        and not config.class_attention_proj
    )
    assert not config.spatial_position_bias and config.shared_guidance_norm and not config.decoder_fuse_bias
    assert config.clip_guidance_dims == (256, 128) and not config.clip_guidance_normalized
    shared = SpatialRefinement(dim=8, guidance_dim=4, num_heads=2, window_size=4, mlp_ratio=2)
    names = set(shared.state_dict())
    assert "norm_guidance.weight" in names and not any("relative_position" in n for n in names)
    assert not any(n.startswith("blocks.") and "norm_guidance" in n for n in names)
    own = SpatialRefinement(
        dim=8,
        guidance_dim=4,
        num_heads=2,
        window_size=4,
        mlp_ratio=2,
        position_bias=True,
        shared_guidance_norm=False,
    )
    assert {"blocks.0.norm_guidance.weight", "blocks.1.attn.relative_position_bias"} <= set(own.state_dict())
    decoder = UpsamplingDecoder(in_dim=32, guidance_in_dims=(6, 6), guidance_dims=(8, 8), out_dims=(32, 16))
    assert all(s.fuse[0].bias is None and s.fuse[3].bias is None for s in decoder.stages)


def test_clip_guidance_learned_upsamplers_feed_the_decoder_at_its_stage_sizes():
    guidance = ClipGuidance(embed_dim=12, hidden_size=20, upsample_dims=(16, 8))
    dense, coarse, fine = torch.randn(2, 12, 6, 6), torch.randn(2, 20, 6, 6), torch.randn(2, 20, 6, 6)
    out = guidance(dense, [coarse, fine])
    assert out.final is dense  # raw, not normalised
    assert out.decoder[0].shape == (2, 16, 12, 12) and out.decoder[1].shape == (2, 8, 24, 24)
    decoder = UpsamplingDecoder(in_dim=32, guidance_in_dims=(16, 8), guidance_dims=(8, 8), out_dims=(32, 16))
    assert decoder(torch.randn(2, 32, 3, 6, 6), out.decoder).shape == (2, 3, 24, 24)
    normalised = ClipGuidance(embed_dim=12, hidden_size=20, upsample_dims=None, normalized=True)(
        dense, [coarse, fine]
    )
    torch.testing.assert_close(normalised.final.norm(dim=1), torch.ones(2, 6, 6))
    assert normalised.decoder[1].shape == (2, 20, 12, 12)
