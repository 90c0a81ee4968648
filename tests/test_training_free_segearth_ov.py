"""Preset ``segearth-ov``: SegEarth-OV as the official code runs it, matched against a fixture made by that
code (``tests/fixtures/make_segearth_ov.py``) on weights filled from key names; SimFeatUp loading; wiring."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from aeroseg import build
from aeroseg.errors import CheckpointError, UserError
from aeroseg.training_free.segearth_config import SegEarthOVConfig, segearth_ov
from aeroseg.training_free.segearth_ov import SegEarthOV
from aeroseg.training_free.simfeatup import SimFeatUp, load_simfeatup
from tests.helpers.hashed_weights import hashed_state
from tests.test_training_free import http_folder  # noqa: F401, F811 - the fixture

FIXTURE = Path(__file__).parent / "fixtures" / "segearth_ov.safetensors"


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The fixture's tensors, class names and our model on the same hashed weights."""
    root = tmp_path_factory.mktemp("segearth_ov")
    with safe_open(str(FIXTURE), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    save_file(hashed_state(json.loads(meta["clip_shapes"])), str(root / "clip.safetensors"))
    torch.save({"state_dict": hashed_state(json.loads(meta["simfeatup_shapes"]))}, root / "simfeatup.ckpt")
    names = [line.split(",") for line in meta["class_names"].splitlines() if line]
    model = build(
        "segearth-ov",
        clip=str(root / "clip.safetensors"),
        simfeatup=str(root / "simfeatup.ckpt"),
        background_threshold=float(meta["prob_thd"]),
    )
    return model, tensors, names, root


def merged(probs: torch.Tensor, names: list[list[str]]) -> torch.Tensor:
    """T prompts → classes: max over each class's synonyms (the official name-file convention)."""
    out, i = [], 0
    for synonyms in names:
        out.append(probs[:, i : i + len(synonyms)].amax(1))
        i += len(synonyms)
    return torch.stack(out, 1)


def test_matches_the_official_code(official):
    model, tensors, names, _ = official
    prompts = [p for synonyms in names for p in synonyms]
    image = tensors["image"][None]
    with torch.no_grad():
        feats = model.encode(image)
        thresholded = merged(model.segment(feats, prompts).sigmoid(), names)[0]
        model.config.background_threshold = 0.0
        probs = merged(model.segment(feats, prompts).sigmoid(), names)[0]
    expected = tensors["probabilities"]
    assert probs.shape == expected.shape == (9, 200, 160)
    torch.testing.assert_close(probs, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(thresholded.argmax(0).to(torch.uint8), tensors["prediction"])
    assert len(feats.boxes) == 9  # 448×358 after the resize: 3×3 crops of 224, stride 112


def released_layout(model: SimFeatUp) -> dict[str, torch.Tensor]:
    """Our SimFeatUp's weights under the released checkpoint's names (the inverse of the key mapping)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("fixup."):
            key = "fixup_proj.1." + key.removeprefix("fixup.")
        elif model.kind == "jbu_one":
            key = "up." + key.removeprefix("steps.0.")
        else:
            index, rest = key.removeprefix("steps.").split(".", 1)
            key = f"up{int(index) + 1}.{rest}"
        out["upsampler." + key] = torch.randn_like(value)
    return out


@pytest.mark.parametrize("kind", ["jbu_one", "jbu_stack"])
def test_simfeatup_checkpoints_load_by_key_mapping(tmp_path, kind):
    state = released_layout(SimFeatUp(8, kind))
    torch.save({"state_dict": state, "epoch": 3, "global_step": 10}, tmp_path / "up.ckpt")
    model = load_simfeatup(str(tmp_path / "up.ckpt"), 8)
    assert model.kind == kind and len(model.steps) == (1 if kind == "jbu_one" else 4)
    assert torch.equal(model.fixup.weight, state["upsampler.fixup_proj.1.weight"])
    out = model(torch.randn(1, 8, 4, 3), torch.randn(1, 3, 64, 48))
    assert out.shape == (1, 8, 64, 48) and torch.isfinite(out).all()


def test_simfeatup_errors_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist; download xclip_jbu_one") as error:
        load_simfeatup(str(tmp_path / "missing.ckpt"), 8)
    assert "\n" not in str(error.value)
    torch.save({"state_dict": {"upsampler.other.weight": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="unexpected key"):
        load_simfeatup(str(tmp_path / "bad.ckpt"), 8)
    state = released_layout(SimFeatUp(8))
    torch.save({"state_dict": state}, tmp_path / "wide.ckpt")
    with pytest.raises(CheckpointError, match="does not fit SimFeatUp on 16 channels"):
        load_simfeatup(str(tmp_path / "wide.ckpt"), 16)
    (tmp_path / "pickle.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read it as a SimFeatUp checkpoint; pass the .ckpt"):
        load_simfeatup(str(tmp_path / "pickle.ckpt"), 8)


def test_preset_builds_offline_frozen_and_equivariant(tiny_backbones):
    config = SegEarthOVConfig.from_dict(segearth_ov().to_dict())
    assert config == segearth_ov() and len(config.prompt_templates) == 80
    with pytest.raises(UserError, match="patch-16 CLIP"):
        build("segearth-ov", clip=str(tiny_backbones["clip"]))  # tiny CLIP: patch 8
    model = build(
        "segearth-ov",
        clip=str(tiny_backbones["clip"]),
        simfeatup=None,
        slide_crop=32,
        slide_stride=16,
        image_size=64,
        prompt_templates=("a {}",),
    )
    assert isinstance(model, SegEarthOV) and not any(p.requires_grad for p in model.parameters())
    image = torch.rand(1, 3, 40, 56)
    feats = model.encode(image)
    classes = ["field", "forest", "water"]
    logits = model.segment(feats, classes)
    assert logits.shape == (1, 3, 40, 56)
    torch.testing.assert_close(logits.sigmoid().sum(1), torch.ones(1, 40, 56), atol=1e-4, rtol=0)
    permuted = model.segment(feats, classes[::-1])
    torch.testing.assert_close(permuted.sigmoid(), logits.flip(1).sigmoid(), atol=1e-5, rtol=1e-4)


def test_simfeatup_downloads_once_from_a_url(tmp_path, http_folder, monkeypatch):  # noqa: F811
    folder, base = http_folder
    torch.save({"state_dict": released_layout(SimFeatUp(8))}, folder / "up.ckpt")
    monkeypatch.setenv("AEROSEG_CACHE", str(tmp_path / "cache"))
    first = load_simfeatup(f"{base}/up.ckpt", 8)
    (folder / "up.ckpt").unlink()  # the second load reads the cached copy
    second = load_simfeatup(f"{base}/up.ckpt", 8)
    assert torch.equal(first.fixup.weight, second.fixup.weight)
    assert len(list((tmp_path / "cache" / "weights").iterdir())) == 1
    with pytest.raises(CheckpointError, match="cannot download SimFeatUp"):
        load_simfeatup(f"{base}/missing.ckpt", 8)
