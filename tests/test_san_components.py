"""SAN's components one by one: CLIP features, mask recognition, side adapter, mask decoder, classifier."""

import pytest
import torch
import torch.nn.functional as F

from aeroseg.san.clip_features import resize_position_embedding
from aeroseg.san.feature_fusion import LayerNorm2d
from aeroseg.san.mask_decoder import MaskDecoder
from aeroseg.san.mask_recognition import BLOCKED
from tests.helpers.tiny_san import tiny_clip, tiny_san


@pytest.fixture(scope="module")
def model():
    return tiny_san().eval()


def normalised(seed, h=64, w=64):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_clip_features_are_clips_hidden_states_at_its_own_grid():
    clip = tiny_clip().eval()
    model = tiny_san().eval()
    model.clip_features.embeddings.load_state_dict(clip.vision_model.embeddings.state_dict())
    x = normalised(0)
    with torch.no_grad():
        ours = model.clip_features(x)
        theirs = clip.vision_model(pixel_values=x, output_hidden_states=True).hidden_states
    assert ours.grid == (4, 4) and len(ours.tokens) == 5
    for layer in range(5):  # hidden_states[0]: the encoder's input, after pre_layrnorm
        torch.testing.assert_close(ours.tokens[layer], theirs[layer], rtol=1e-5, atol=1e-5)
    assert ours.spatial(2).shape == (1, 64, 4, 4)
    torch.testing.assert_close(ours.spatial(2)[0, :, 1, 3], ours.tokens[2][0, 1 + 1 * 4 + 3])


def test_position_embedding_resize_keeps_cls_and_is_bicubic():
    pos = torch.randn(1 + 3 * 3, 8)
    assert resize_position_embedding(pos, (3, 3), (3, 3)) is pos
    out = resize_position_embedding(pos, (3, 3), (5, 4))
    assert out.shape == (1 + 20, 8) and torch.equal(out[0], pos[0])
    grid = F.interpolate(pos[1:].T.reshape(1, 8, 3, 3), size=(5, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[1:], grid.reshape(8, 20).T)


def test_recognition_mask_blocks_the_sos_tokens_as_the_official_head(model):
    bias = torch.randn(2, 2, 3, 8, 8)  # B×heads×Q×h×w at the side grid
    mask = model.recognition.attention_mask(bias, (4, 4))
    q, n = 3, 3 + 1 + 16
    assert mask.shape == (2, 2, n, n)
    expected = F.adaptive_max_pool2d(bias.flatten(1, 2), (4, 4)).reshape(2, 2, 3, 16)
    assert torch.equal(mask[:, :, :q, q + 1 :], expected)
    assert (mask[:, :, q:, :q] == BLOCKED).all() and (mask[:, :, :q, q] == BLOCKED).all()
    sos = mask[0, 0, :q, :q]
    assert torch.equal(sos, torch.full((q, q), BLOCKED).fill_diagonal_(0))
    assert (mask[:, :, q:, q:] == 0).all()
    shared = model.recognition.attention_mask(bias[:, :1], (4, 4))
    assert torch.equal(shared[:, 1], shared[:, 0])  # one bias head serves every CLIP head


def test_each_mask_embedding_depends_on_its_own_bias_only(model):
    with torch.no_grad():
        clip = model.clip_features(normalised(1))
        bias = torch.randn(1, 2, 3, 4, 4)
        first = model.recognition(clip.tokens[-1], clip.grid, [bias])
        changed = bias.clone()
        changed[:, :, 1] += 5 * torch.randn(1, 2, 4, 4)
        second = model.recognition(clip.tokens[-1], clip.grid, [changed])
    assert first.shape == (1, 3, 32)
    torch.testing.assert_close(first[:, [0, 2]], second[:, [0, 2]], rtol=0, atol=1e-6)
    assert (first[:, 1] - second[:, 1]).abs().max() > 1e-3
    torch.testing.assert_close(first.norm(dim=-1), torch.ones(1, 3))


def test_without_biases_all_sos_tokens_agree(model):
    """Without biases every [SOS] token starts as [CLS] and sees the same keys (itself and the patches):
    all of them agree."""
    with torch.no_grad():
        clip = model.clip_features(normalised(2))
        out = model.recognition(clip.tokens[-1], clip.grid, [torch.zeros(1, 2, 5, 4, 4)])
    torch.testing.assert_close(out[:, 1:], out[:, :1].expand(-1, 4, -1), rtol=1e-5, atol=1e-6)


def test_side_adapter_decodes_the_supervised_blocks_and_resizes_its_grid(model):
    with torch.no_grad():
        clip = model.clip_features(normalised(3, 64, 96))
        every = model.side_adapter(normalised(3, 64, 96), clip, all_blocks=True)
        last = model.side_adapter(normalised(3, 64, 96), clip, all_blocks=False)
    assert len(every) == 2 and len(last) == 1
    masks, biases = last[0]
    assert masks.shape == (1, 10, 4, 6) and [b.shape for b in biases] == [(1, 2, 10, 4, 6)]
    assert torch.equal(masks, every[-1][0])


def test_side_adapter_uses_the_clip_features_it_fuses(model):
    x = normalised(4)
    with torch.no_grad():
        clip = model.clip_features(x)
        base = model.side_adapter(x, clip, all_blocks=False)[0][0]
        clip.tokens[3] = clip.tokens[3] + 1.0  # layer 3 is not in the fusion map (0, 2, 4)
        assert torch.equal(model.side_adapter(x, clip, all_blocks=False)[0][0], base)
        clip.tokens[2] = clip.tokens[2] + torch.randn(
            clip.tokens[2].shape, generator=torch.Generator().manual_seed(0)
        )
        assert (model.side_adapter(x, clip, all_blocks=False)[0][0] - base).abs().max() > 1e-4


def test_mask_decoder_is_query_pixel_products():
    decoder = MaskDecoder(
        in_channels=8, num_heads=2, num_layers=3, embed_channels=4, mlp_channels=6, mlp_layers=2, rescale=True
    )
    query, x = torch.randn(2, 5, 8), torch.randn(2, 8, 3, 4)
    masks, biases = decoder(query, x)
    q, pix = decoder.query_mlp(query), decoder.pix_mlp(x)
    torch.testing.assert_close(masks, torch.einsum("bqc,bchw->bqhw", q, pix))
    attn = decoder.attn_mlp(x).reshape(2, 3, 2, 4, 3, 4)
    raw = torch.einsum("bqc,blnchw->blnqhw", q, attn)
    w, b = decoder.bias_scaling.weight.item(), decoder.bias_scaling.bias.item()
    assert len(biases) == 3
    for layer, bias in enumerate(biases):
        torch.testing.assert_close(bias, w * raw[:, layer] + b)


def test_layer_norm_2d_normalises_the_channels():
    norm = LayerNorm2d(5)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(2, 5, 3, 4)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (5,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_classifier_is_the_template_mean_plus_a_normalised_background(model):
    classifier = model.classifier
    classes = ["ship", "harbor"]
    with torch.no_grad():
        weights = classifier(classes)
        clip_text = []
        for name in classes:
            per = []
            for t in classifier.templates:
                batch = classifier.tokenizer([t.format(name)], return_tensors="pt")
                out = classifier.text_model(input_ids=batch["input_ids"])
                per.append(F.normalize(classifier.text_projection(out.pooler_output)[0], dim=-1))
            clip_text.append(F.normalize(torch.stack(per).mean(0), dim=-1))
    scale = classifier.logit_scale.exp()
    assert weights.shape == (3, 32)
    torch.testing.assert_close(weights[:2] / scale, torch.stack(clip_text), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights[2] / scale, F.normalize(classifier.bg_embed[0], dim=-1))
    with torch.no_grad():
        torch.testing.assert_close(classifier(classes[::-1])[:2], weights[:2].flip(0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        classifier([])
