"""Preset ``segearth-ov3``: SAM 3 on tiny random weights saved in the transformers format and loaded offline;
the official fusion and gating on constructed inputs whose answer is known; the hub's refusal."""

import pytest
import torch

from aeroseg import build
from aeroseg.errors import CheckpointError
from aeroseg.training_free.segearth_ov3 import (
    SegEarthOV3,
    SegEarthOV3Config,
    background_floor,
    fuse_heads,
    load_sam3,
    segearth_ov3,
)
from tests.helpers.tiny_sam3 import TINY_SAM3_SIZE, write_tiny_sam3

CLASSES = ["background", "building", "road", "tree"]


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3"))


@pytest.fixture(scope="module")
def model(sam3_dir):
    return build("segearth-ov3", sam3=str(sam3_dir), image_size=TINY_SAM3_SIZE, confidence_threshold=0.0)


def test_shapes_frozen_and_encoding_reused(model):
    assert isinstance(model, SegEarthOV3) and model.config.preset == "segearth-ov3"
    assert not any(p.requires_grad for p in model.parameters())
    images = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        feats = model.encode_image(images)
        logits = model.segment(feats, CLASSES)
        again = model.segment(feats, ["water", "building"])  # a new class list, the same encoding
    assert logits.shape == (2, 4, 40, 56) and again.shape == (2, 2, 40, 56)
    assert torch.isfinite(logits).all() and 0 <= logits.sigmoid().min() and logits.sigmoid().max() <= 1
    torch.testing.assert_close(again[:, 1], logits[:, 1], atol=1e-5, rtol=1e-5)  # a class is scored alone
    torch.testing.assert_close(model(images, CLASSES), logits, atol=1e-5, rtol=1e-5)


def test_class_permutation_equivariance(model):
    images = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        feats = model.encode_image(images)
        logits = model.segment(feats, CLASSES)
        permuted = model.segment(feats, CLASSES[::-1])
    torch.testing.assert_close(permuted, logits.flip(1), atol=1e-5, rtol=1e-5)


def test_sliding_crops_cover_the_input(sam3_dir):
    model = build(
        "segearth-ov3", sam3=str(sam3_dir), image_size=TINY_SAM3_SIZE, slide_crop=32, slide_stride=24
    )
    with torch.no_grad():
        feats = model.encode_image(torch.rand(1, 3, 56, 40))
        logits = model.segment(feats, CLASSES[:2])
    assert feats.boxes == [(0, 32, 0, 32), (0, 32, 8, 40), (24, 56, 0, 32), (24, 56, 8, 40)]
    assert logits.shape == (1, 2, 56, 40)
    assert feats.vision.fpn_hidden_states[0].shape[0] == 4  # one encoding per crop


def heads(n_queries=2, size=8):
    """SAM 3 outputs for one crop: no instance, a flat semantic map, a confident presence."""
    return dict(
        mask_logits=torch.full((1, n_queries, size, size), -20.0),
        object_logits=torch.full((1, n_queries), -20.0),
        presence_logits=torch.full((1, 1), 20.0),
        semantic_logits=torch.zeros(1, 1, size, size),  # sigmoid 0.5 everywhere
    )


def test_presence_near_zero_removes_a_class():
    config = segearth_ov3()
    present = fuse_heads(**heads(), size=(8, 8), config=config)
    torch.testing.assert_close(present, torch.full((1, 8, 8), 0.5))
    absent = heads()
    absent["presence_logits"] = torch.full((1, 1), -20.0)
    assert fuse_heads(**absent, size=(8, 8), config=config).max() < 1e-8
    assert fuse_heads(**absent, size=(8, 8), config=config.replace(use_presence_score=False)).min() == 0.5


def test_an_instance_mask_overrides_a_wrong_semantic_region():
    """The semantic head scores 0.5 everywhere; a confident instance (score 0.9) covers the left half: the
    fused map is max(0.5, 0.9 · mask), so the instance wins there and the semantic map elsewhere."""
    inputs = heads()
    inputs["mask_logits"][0, 0, :, :4] = 20.0
    inputs["object_logits"][0, 0] = torch.logit(torch.tensor(0.9))
    fused = fuse_heads(**inputs, size=(8, 8), config=segearth_ov3())[0]
    torch.testing.assert_close(fused[:, :4], torch.full((8, 4), 0.9))
    torch.testing.assert_close(fused[:, 4:], torch.full((8, 4), 0.5))
    # below the confidence threshold the instance is dropped; without the decoder it is ignored
    strict = segearth_ov3().replace(confidence_threshold=0.95)
    assert fuse_heads(**inputs, size=(8, 8), config=strict).max() == 0.5
    no_decoder = segearth_ov3().replace(use_transformer_decoder=False)
    assert fuse_heads(**inputs, size=(8, 8), config=no_decoder).max() == 0.5


def test_background_threshold():
    scores = torch.tensor([0.05, 0.3, 0.2, 0.1])[None, :, None, None].repeat(1, 1, 2, 2)
    scores[..., 1] = torch.tensor([0.05, 0.6, 0.2, 0.1])[:, None]
    out = background_floor(scores, CLASSES, ("background",), 0.5)
    assert (out.argmax(1)[0, :, 0] == 0).all()  # no class reaches 0.5: background
    assert (out.argmax(1)[0, :, 1] == 1).all()  # building at 0.6 stays
    torch.testing.assert_close(out[:, 1:], scores[:, 1:])
    assert torch.equal(background_floor(scores, CLASSES, ("background",), 0.0), scores)
    assert torch.equal(background_floor(scores, CLASSES[1:] + ["water"], ("background",), 0.5), scores)


def test_config_round_trip_and_validation():
    assert SegEarthOV3Config.from_dict(segearth_ov3().to_dict()) == segearth_ov3()
    with pytest.raises(ValueError, match="slide_stride"):
        segearth_ov3().replace(slide_crop=512)
    with pytest.raises(ValueError, match="no head"):
        segearth_ov3().replace(use_sem_seg=False, use_transformer_decoder=False)


def test_hub_refusal_names_the_licence(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match="gated under the SAM License") as error:
        load_sam3("facebook/sam3", arch="sam3")
    assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_sam3(str(tmp_path / "missing"), arch="sam3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a transformers SAM 3 directory"):
        load_sam3(str(tmp_path / "empty"), arch="sam3")
