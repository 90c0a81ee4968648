"""SCAN's components one by one: the multi-scale deformable attention against a direct computation, the Swin
read from Microsoft's layout, the contextual shift's draws, the mask regions, the ensemble, the frequency
module and the text classifier."""

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers.models.mask2former.modeling_mask2former import multi_scale_deformable_attention

from aeroseg.errors import CheckpointError
from aeroseg.scan.region_ensemble import CLIP_MEAN, CLIP_STD, ensemble_probabilities, mask_regions
from aeroseg.scan.semantic_integration import FrequencyModule
from aeroseg.scan.swin_backbone import build_swin
from tests.helpers.hashed_weights import hashed_tensor
from tests.helpers.tiny_scan import tiny_clip, tiny_scan

FIXTURE = Path(__file__).parent / "fixtures" / "scan_official.safetensors"


def bilinear_zero_padded(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """image C×H×W at the normalised point (x, y) in [0, 1]² (pixel centres at (i + 0.5) / size), zero outside."""
    _, h, w = image.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
    out = torch.zeros(image.shape[0], dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(px - xi)) * (1 - abs(py - yi))
            if 0 <= xi < w and 0 <= yi < h:
                out += weight * image[:, yi, xi].double()
    return out


def test_deformable_attention_equals_a_direct_computation():
    torch.manual_seed(0)
    shapes = [(5, 7), (3, 4), (2, 2)]
    batch, queries, heads, dim, points = 2, 3, 2, 4, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim)
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2) * 1.4 - 0.2  # some outside [0, 1]
    weights = torch.softmax(torch.randn(batch, queries, heads, len(shapes) * points), -1)
    weights = weights.view(batch, queries, heads, len(shapes), points)
    ours = multi_scale_deformable_attention(value, shapes, locations, weights)  # B×Q×(heads·dim)
    levels = value.split([h * w for h, w in shapes], dim=1)
    for b in range(batch):
        for q in range(queries):
            for m in range(heads):
                expected = torch.zeros(dim, dtype=torch.float64)
                for level, (h, w) in enumerate(shapes):
                    image = levels[level][b, :, m].T.reshape(dim, h, w)
                    for p in range(points):
                        x, y = locations[b, q, m, level, p].tolist()
                        expected += weights[b, q, m, level, p] * bilinear_zero_padded(image, x, y)
                got = ours[b, q, m * dim : (m + 1) * dim].double()
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_swin_from_microsofts_layout_matches_the_official_features(tmp_path):
    """The fixture's Swin tensors as a Microsoft release (classifier norm and head, shift-mask buffers) through
    ``build_swin``: the official res5."""
    with safe_open(str(FIXTURE), "pt") as f:
        meta, res5, small = f.metadata(), f.get_tensor("eval.9.res5"), f.get_tensor("image")
    keys = [(k, s) for k, s in json.loads(meta["keys"]) if k.startswith("backbone.")]
    state = {k.removeprefix("backbone."): hashed_tensor(k, s) for k, s in keys}
    state.update(
        {"norm.weight": torch.ones(256), "norm.bias": torch.zeros(256), "head.weight": torch.zeros(5, 256)}
    )
    state["layers.0.blocks.1.attn_mask"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "swin.pth")
    tiny = json.loads(meta["tiny"])
    config = tiny_scan().config.replace(
        swin=str(tmp_path / "swin.pth"), swin_embed_dim=tiny["MODEL.SWIN.EMBED_DIM"], swin_window=12,
        swin_depths=tuple(tiny["MODEL.SWIN.DEPTHS"]), swin_heads=tuple(tiny["MODEL.SWIN.NUM_HEADS"]),
    )  # fmt: skip
    swin = build_swin(config, pretrained=True).eval()
    x = small.float().repeat_interleave(4, 1).repeat_interleave(4, 2)[None]
    mean, std = (
        torch.tensor(config.pixel_mean).view(1, 3, 1, 1),
        torch.tensor(config.pixel_std).view(1, 3, 1, 1),
    )
    with torch.no_grad():
        ours = swin(F.pad((x - mean) / std, (0, 8, 0, 28)))[-1]
    assert ((ours - res5).abs().max() / res5.abs().max()) < 1e-4
    state["layers.0.blocks.0.attn.extra.weight"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "swin.pth")
    with pytest.raises(CheckpointError, match="unexpected tensors"):
        build_swin(config, pretrained=True)


class RecordingRandom(random.Random):
    def __init__(self):
        super().__init__(0)
        self.calls = []

    def sample(self, population, k, **kwargs):
        self.calls.append((len(population), k))
        return super().sample(population, k, **kwargs)


def test_contextual_shift_draws_in_the_official_order_and_keeps_clip_without_background():
    model = tiny_scan(replace_ratio=0.5, replace_layers=(1, 3))
    shift, clip = model.region_clip, tiny_clip()
    regions = torch.randn(3, 3, 64, 64)
    masks = torch.zeros(3, 1, 64, 64)
    masks[0, :, :16, :16] = 1  # 1 of 16 tokens foreground
    masks[1, :, 20, 40] = 1  # one pixel: its token is foreground
    masks[2] = 1  # no background
    context = {layer: torch.randn(64) for layer in (1, 3)}
    rng = RecordingRandom()
    with torch.no_grad():
        out = shift(regions, masks, context, rng)
        assert rng.calls == [(15, 7), (15, 7), (0, 0), (15, 7), (15, 7), (0, 0)]  # per layer, per region
        plain = F.normalize(clip.get_image_features(pixel_values=regions).pooler_output, dim=-1)
    torch.testing.assert_close(out[2], plain[2], rtol=1e-5, atol=1e-6)
    assert (out[:2] - plain[:2]).abs().max() > 1e-3
    no_shift = tiny_scan(replace_ratio=0.0).region_clip
    with torch.no_grad():
        torch.testing.assert_close(no_shift(regions, masks, context, rng), plain, rtol=1e-5, atol=1e-6)


def test_mask_regions_crop_the_box_and_fill_outside_with_the_clip_mean():
    image = torch.rand(3, 40, 50) * 255
    probs = torch.zeros(3, 40, 50)
    probs[0, 10:20, 5:30] = 0.9  # a 10×25 box
    probs[0, 12, 10] = 0.3  # below the threshold: filled
    probs[1, 0:5, 45:50] = 0.5
    regions = mask_regions(image, probs, threshold=0.4, fill="mean", expand_ratio=1.0, size=20)
    assert regions.valid.tolist() == [True, True, False] and regions.pixels.shape == (2, 3, 20, 20)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1) * 255, torch.tensor(CLIP_STD).view(3, 1, 1) * 255
    crop = image[:, 10:20, 5:30].clone()
    crop[:, 2, 5] = mean[:, 0, 0]
    expected = F.interpolate(((crop - mean) / std)[None], size=(20, 20), mode="bicubic", align_corners=False)
    torch.testing.assert_close(regions.pixels[:1], expected)
    assert regions.masks[0].min() == 0 and regions.masks[1].min() == 1
    wide = mask_regions(image, probs, threshold=0.4, fill="zero", expand_ratio=3.0, size=20)
    assert wide.pixels.shape == (2, 3, 20, 20)  # the expanded box is clipped to the image


def test_ensemble_is_the_weighted_geometric_mean_over_the_valid_proposals():
    torch.manual_seed(0)
    logits, region = torch.randn(4, 6), torch.randn(2, 6)
    valid = torch.tensor([True, False, True, False])
    probs, keep = ensemble_probabilities(logits, region, valid, 0.7)
    p_in = logits.softmax(-1)[:, :-1]
    p_region = region[:, :-1].softmax(-1)
    assert keep.all()
    torch.testing.assert_close(probs[[0, 2]], p_in[[0, 2]] ** 0.3 * p_region**0.7)
    torch.testing.assert_close(probs[[1, 3]], p_in[[1, 3]] ** 0.3)
    only_regions, kept = ensemble_probabilities(logits, region, valid, 0.0)
    torch.testing.assert_close(only_regions, p_region)
    assert torch.equal(kept, valid)


def test_frequency_module_is_the_identity_when_its_convolutions_are_zero():
    module = FrequencyModule(4)
    x = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        for conv in (module.conv1, module.conv2):
            conv.weight.zero_()
            conv.bias.zero_()
        torch.testing.assert_close(module(x, 3.0), x)
        module.conv2.bias.fill_(1.0)  # a constant spectrum 1 + 1j: its ifft2 is an impulse at (0, 0)
        out = module(x, 3.0) - x
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out[:, :, 0, 0].allclose(torch.ones(2, 4)) and out[:, :, 1:, :].abs().max() < 1e-6


def test_text_classifier_averages_templates_and_appends_no_object():
    model = tiny_scan()
    classifier = model.classifier
    with torch.no_grad():
        weights = classifier(["ship", "plane"])
        one = classifier.encode_text(["ship"])[0]
    assert weights.shape == (3, 16)
    torch.testing.assert_close(weights.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(weights[0], one, rtol=1e-5, atol=1e-6)  # a class does not depend on the others
    torch.testing.assert_close(weights[2], F.normalize(classifier.non_object_embedding[0], dim=-1))
    with torch.no_grad():
        assert classifier.text_embeddings(["ship", "plane"]) is classifier.text_embeddings(["ship", "plane"])
        logits = classifier.logits(torch.randn(5, 16), weights)
    assert logits.shape == (5, 3) and logits.abs().max() <= classifier.temperature + 1e-3


def test_swin_from_a_transformers_directory_and_a_wrong_architecture(tmp_path):
    from transformers.models.swin.modeling_swin import SwinModel

    from aeroseg.scan.swin_backbone import swin_config

    config = tiny_scan().config
    torch.manual_seed(0)
    SwinModel(swin_config(config), add_pooling_layer=False).save_pretrained(tmp_path / "swin")
    swin = build_swin(config.replace(swin=str(tmp_path / "swin")), pretrained=True)
    saved = SwinModel.from_pretrained(tmp_path / "swin")
    for key, value in saved.state_dict().items():
        if not key.startswith("layernorm."):
            assert torch.equal(swin.state_dict()[f"swin.{key}"], value), key
    with pytest.raises(CheckpointError, match="the config needs"):
        build_swin(config.replace(swin=str(tmp_path / "swin"), swin_window=7), pretrained=True)
    with pytest.raises(CheckpointError, match="cannot load Swin"):
        build_swin(config.replace(swin=str(tmp_path / "absent")), pretrained=True)
