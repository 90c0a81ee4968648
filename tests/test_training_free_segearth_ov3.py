"""Preset ``segearth-ov3``: SAM 3 on tiny random weights saved in the transformers format and loaded offline;
the official fusion and gating on constructed inputs whose answer is known; the hub's refusal."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from PIL import Image
from transformers.modeling_outputs import BaseModelOutputWithPooling

import aeroseg
import aeroseg.training_free.segearth_ov3 as segearth_ov3_module
from aeroseg import build
from aeroseg.backbones import load_sam3
from aeroseg.cli import main
from aeroseg.cli.options import config_file_overrides
from aeroseg.errors import CheckpointError, UserError
from aeroseg.registry import ModelRequest, preset_config, segmenter
from aeroseg.training_free.segearth_config import SegEarthOV3Config, segearth_ov3
from aeroseg.training_free.segearth_ov3 import SegEarthOV3, background_floor, fuse_heads
from tests.helpers.tiny_sam3 import write_tiny_sam3

CLASSES = ["background", "building", "road", "tree"]


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory):
    return write_tiny_sam3(tmp_path_factory.mktemp("sam3"))


@pytest.fixture(scope="module")
def model(sam3_dir):
    return build("segearth-ov3", sam3=str(sam3_dir), confidence_threshold=0.0)


def test_shapes_frozen_and_encoding_reused(model):
    assert isinstance(model, SegEarthOV3) and model.config.preset == "segearth-ov3"
    assert not any(p.requires_grad for p in model.parameters())
    images = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        feats = model.encode(images)
        logits = model.segment(feats, CLASSES)
        again = model.segment(feats, ["water", "building"])  # a new class list, the same encoding
    assert logits.shape == (2, 4, 40, 56) and again.shape == (2, 2, 40, 56)
    assert torch.isfinite(logits).all() and 0 <= logits.sigmoid().min() and logits.sigmoid().max() <= 1
    torch.testing.assert_close(again[:, 1], logits[:, 1], atol=1e-5, rtol=1e-5)  # a class is scored alone
    torch.testing.assert_close(model(images, CLASSES), logits, atol=1e-5, rtol=1e-5)


def test_class_permutation_equivariance(model):
    images = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        feats = model.encode(images)
        logits = model.segment(feats, CLASSES)
        permuted = model.segment(feats, CLASSES[::-1])
    torch.testing.assert_close(permuted, logits.flip(1), atol=1e-5, rtol=1e-5)


def test_sliding_crops_cover_the_input(sam3_dir):
    model = build("segearth-ov3", sam3=str(sam3_dir), slide_crop=32, slide_stride=24)
    with torch.no_grad():
        feats = model.encode(torch.rand(1, 3, 56, 40))
        logits = model.segment(feats, CLASSES[:2])
    assert feats.boxes == [(0, 32, 0, 32), (0, 32, 8, 40), (24, 56, 0, 32), (24, 56, 8, 40)]
    assert logits.shape == (1, 2, 56, 40)
    assert feats.vision.fpn_hidden_states[0].shape[0] == 4  # one encoding per crop


def per_prompt_loop(model, feats, classes):
    """Each prompt through SAM 3's detector alone (the official loop), crops averaged: B×T×H×W scores."""
    text, mask = model.encode_text(classes)
    B, K = feats.batch, len(feats.boxes)
    y1, y2, x1, x2 = feats.boxes[0]
    maps = []
    for t in range(len(classes)):
        out = model.sam3(
            vision_embeds=feats.vision,
            text_embeds=BaseModelOutputWithPooling(pooler_output=text[t : t + 1].expand(B * K, -1, -1)),
            attention_mask=mask[t : t + 1].expand(B * K, -1),
        )
        heads = (out.pred_masks, out.pred_logits, out.presence_logits, out.semantic_seg)
        maps.append(fuse_heads(*heads, (y2 - y1, x2 - x1), model.config).view(B, K, y2 - y1, x2 - x1))
    preds, count = torch.zeros(B, len(classes), *feats.image_size), torch.zeros(*feats.image_size)
    for k, (y1, y2, x1, x2) in enumerate(feats.boxes):
        preds[:, :, y1:y2, x1:x2] += torch.stack([m[:, k] for m in maps], 1)
        count[y1:y2, x1:x2] += 1
    return preds / count


@pytest.mark.parametrize("per_pass", [16, 3])  # 5 prompts in one pass; in passes of 3 and 2
@pytest.mark.parametrize("classes", [CLASSES[1:2], CLASSES + ["water"]])  # one class and many
def test_prompts_in_one_batched_pass_equal_the_loop(sam3_dir, monkeypatch, per_pass, classes):
    monkeypatch.setattr(segearth_ov3_module, "PROMPTS_PER_PASS", per_pass)
    model = build(
        "segearth-ov3", sam3=str(sam3_dir), slide_crop=32, slide_stride=24, confidence_threshold=0.0
    )
    with torch.no_grad():
        feats = model.encode(torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0)))
        batched = model.probabilities(feats, classes)
        expected = per_prompt_loop(model, feats, classes).clamp(1e-6, 1 - 1e-6)
    torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-5)


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


# ------------------------------------------------------------------------------------------ wiring
def test_predict_preset_tiles_a_geotiff_of_any_size(tmp_path, sam3_dir, capsys):
    from tests.test_training_free import write_geotiff

    write_geotiff(tmp_path / "scene.tif", 50, 90)
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "scene.tif"), "--classes", "field,forest|wood", "-o", str(out)]
    argv += [
        "--window",
        "32",
        "--preset",
        "segearth-ov3",
        "--sam3",
        str(sam3_dir),
        "--quiet",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    with rasterio.open(out / "scene.tif") as ds:
        assert ds.shape == (50, 90) and ds.crs == "EPSG:32620"
        assert set(np.unique(ds.read(1))) <= {0, 1}
    # weights of another preset are refused in one line
    wrong = ["predict", str(tmp_path / "scene.tif"), "--classes", "a", "-o", str(tmp_path / "o2")]
    assert main([*wrong, "--preset", "segearth-ov3", "--clip", "x", "--quiet"]) == 2
    assert "--clip does not apply to --preset segearth-ov3" in capsys.readouterr().err


def test_evaluate_and_api_presets(tmp_path, sam3_dir):
    data = tmp_path / "toy"
    info = {"name": "toy", "classes": ["field", "forest"], "unseen": ["forest"], "ignore_index": 255}
    for split in ("train", "val"):
        (data / split / "images").mkdir(parents=True)
        (data / split / "masks").mkdir(parents=True)
    (data / "dataset.yaml").write_text(yaml.safe_dump(info))
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(
        data / "val/images/a.png"
    )
    Image.fromarray(np.tile(np.arange(32) >= 16, (32, 1)).astype(np.uint8)).save(data / "val/masks/a.png")
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--data", str(data), "--preset", "segearth-ov3", "--sam3", str(sam3_dir)]
    argv += ["--config", str(CONFIGS / "isaid/training-free/segearth-ov3.yaml")]
    assert main([*argv, "--json", str(out), "--workers", "0", "--quiet", "--device", "cpu"]) == 0
    document = json.loads(out.read_text())
    assert document["method"] == "segearth-ov3" and document["checkpoint"] is None
    assert np.asarray(document["confusion_matrix"]).sum() == 32 * 32
    model = segmenter(
        ModelRequest(preset="segearth-ov3", weights={"sam3": str(sam3_dir)}), "cpu"
    )  # the Python API
    result = aeroseg.predict(model, np.zeros((40, 24, 3), np.uint8), ["field", "forest"], window=32)
    assert result.class_map.shape == (40, 24)


def test_demo_preset(tmp_path, sam3_dir, monkeypatch):
    from tests.test_training_free import write_geotiff

    write_geotiff(tmp_path / "scene.tif", 40, 40)
    argv = [
        "demo",
        "--image",
        str(tmp_path / "scene.tif"),
        "--classes",
        "road,tree",
        "-o",
        str(tmp_path / "o"),
    ]
    assert (
        main([*argv, "--preset", "segearth-ov3", "--sam3", str(sam3_dir), "--quiet", "--device", "cpu"]) == 0
    )
    assert (tmp_path / "o" / "scene.tif").is_file() and (tmp_path / "o" / "scene_overlay.png").is_file()


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.glob("*/training-free/*.yaml")), ids=lambda p: p.parent.parent.name
)
def test_per_dataset_settings_resolve(path):
    document = yaml.safe_load(path.read_text())
    assert path.stem == document["preset"]
    config = preset_config(document["preset"], **document["model"])
    assert config.background_threshold == document["model"]["background_threshold"] > 0


def test_evaluate_config_file_must_match_the_preset(tmp_path):
    with pytest.raises(UserError, match="is not a segearth-ov file"):
        config_file_overrides(str(CONFIGS / "isaid/training-free/segearth-ov3.yaml"), "segearth-ov")
    with pytest.raises(UserError, match="cannot read --config"):
        config_file_overrides(str(tmp_path / "missing.yaml"), "segearth-ov")
