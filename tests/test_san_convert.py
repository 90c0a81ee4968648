"""Official SAN checkpoint files: recognised, converted with the sizes they hold, others refused in one line."""

from pathlib import Path

import pytest
import torch

from aeroseg.convert.san import load_san, recognise
from aeroseg.errors import CheckpointError
from aeroseg.san import SAN
from tests.helpers.tiny_san import official_checkpoint, read_fixture


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    _, meta = read_fixture()
    return official_checkpoint(meta, "san", tmp_path_factory.mktemp("san") / "san_vit_b_16.pth")


@pytest.fixture(scope="module")
def state(checkpoint):
    return torch.load(checkpoint, weights_only=True)["model"]


def refusal(path: Path, **options) -> str:
    with pytest.raises(CheckpointError) as info:
        load_san(path, **options)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_the_file_converts_with_the_sizes_it_holds(checkpoint, state):
    assert recognise(state)
    model = load_san(checkpoint)
    c = model.config
    assert (c.preset, c.side_width, c.side_depth, c.side_patch, c.side_image_size) == ("san", 96, 8, 16, 640)
    assert (c.num_queries, c.embed_channels, c.mlp_channels, c.mlp_layers) == (100, 32, 32, 3)
    assert (c.attn_bias_heads, c.feature_last_layer, c.clip_resolution) == (2, 9, 0.5)
    assert c.fusion_map == ("0->0", "3->1", "6->2", "9->3") and c.rescale_attn_bias
    assert not model.training
    qkv = state["side_adapter_network.vit_model.blocks.2.attn.qkv.weight"]
    attention = model.side_adapter.blocks[2].attention
    assert torch.equal(
        torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]), qkv
    )
    deeper = model.recognition.layers[1].self_attn
    rec = state["clip_rec_head.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(deeper.k_proj.weight, rec[128:256])
    position = model.clip_features.embeddings.position_embedding.weight
    assert torch.equal(position, state["clip_visual_extractor.positional_embedding"])
    assert torch.equal(model.classifier.bg_embed, state["ov_classifier.bg_embed"])
    assert model.classifier.text_model.config.hidden_act == "quick_gelu"


def test_preset_and_overrides_adjust_what_the_file_does_not_say(checkpoint, tmp_path):
    model = load_san(checkpoint, clip_resolution=0.75, deep_supervision=(8,))
    assert model.config.clip_resolution == 0.75 and model.config.deep_supervision == (8,)
    assert "san or san-large" in refusal(checkpoint, preset="aeroseg")
    assert "fusion_map" in refusal(
        checkpoint, preset="san-large", attn_bias_heads=2, fusion_map=("0->0", "3->9")
    )
    model.save_pretrained(tmp_path / "converted")
    again = SAN.from_pretrained(tmp_path / "converted")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x, ["ship"]), model(x, ["ship"]))


def test_a_tensor_too_many_or_too_few_is_named(state, tmp_path):
    path = tmp_path / "broken.pth"
    broken = dict(state)
    broken.pop("side_adapter_network.mask_decoder.pix_mlp.layers.1.bias")
    broken["side_adapter_network.extra.weight"] = torch.zeros(1)
    torch.save({"model": broken}, path)
    message = refusal(path)
    assert "first unexpected tensor 'side_adapter_network.extra.weight'" in message
    assert "first missing tensor 'side_adapter.mask_decoder.pix_mlp.layers.1.bias'" in message
    broken = dict(state)
    broken["ov_classifier.bg_embed"] = torch.zeros(1, 7)
    torch.save({"model": broken}, path)
    assert "classifier.bg_embed has shape (1, 7)" in refusal(path)


def test_fusion_layers_that_differ_from_the_preset_need_a_fusion_map(state, tmp_path):
    path = tmp_path / "three_fusions.pth"
    torch.save({"model": {k: v for k, v in state.items() if ".layer_3." not in k}}, path)
    assert "fusion layers after side blocks [0, 1, 2]" in refusal(path)
    model = load_san(path, fusion_map=("0->0", "3->1", "6->2"))
    assert sorted(model.side_adapter.fusion_layers) == ["layer_0", "layer_1", "layer_2"]


def test_files_of_other_models_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    catseg = {
        "sem_seg_head.predictor.clip_model.visual.conv1.weight": torch.zeros(1),
        "sem_seg_head.predictor.transformer.conv1.weight": torch.zeros(1),
    }
    cases = [
        (catseg, "CAT-Seg / OVRS checkpoint"),
        ({"visual.conv1.weight": torch.zeros(1)}, "a CLIP checkpoint"),
        ({"backbone.stem.conv1.weight": torch.zeros(1)}, "first tensor 'backbone.stem.conv1.weight'"),
    ]
    for state, expected in cases:
        torch.save({"model": state, "iteration": 1}, path)
        assert not recognise(state)
        assert expected in refusal(path)
    torch.save({"model": {"x": torch.zeros(1)}, "cfg": Path("/")}, path)  # needs unpickling a Path
    assert "not a safetensors or weights-only file" in refusal(path) and "weights_only" not in refusal(path)
    assert "no such file" in refusal(tmp_path / "missing.pth")
