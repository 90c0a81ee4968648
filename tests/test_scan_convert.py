"""The SCAN converter: what it infers from a file, and one-line refusals of other models' files."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from aeroseg.convert.scan import infer_config, load_scan, recognise
from aeroseg.errors import CheckpointError

FIXTURE = Path(__file__).parent / "fixtures" / "scan_official.safetensors"


@pytest.fixture(scope="module")
def shapes():
    """The fixture's SCAN checkpoint as shapes only (meta tensors: no memory, no values)."""
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    keys = json.loads(meta["keys"]) + json.loads(meta["buffers"])
    return {k: torch.empty(s, device="meta") for k, s in keys}


def refusal(tmp_path, state, name="model.pth") -> str:
    path = tmp_path / name
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_scan(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_recognise_and_infer_the_preset_from_the_clip_depth(shapes, tmp_path):
    assert recognise(shapes)
    path = tmp_path / "SCAN.pth"
    assert infer_config(shapes, path, 12, None).preset == "scan"
    large = infer_config(shapes, path, 24, None)
    assert large.preset == "scan-large" and large.replace_layers == (1, 3, 5, 7, 9)
    assert large.clip_layers == (12, 18, 24) and large.swin_window == 12
    assert infer_config(shapes, path, 12, "scan", lr=1e-3).lr == 1e-3
    with pytest.raises(CheckpointError, match="loads into scan or scan-large"):
        infer_config(shapes, path, 12, "san")


def test_other_models_files_are_refused_in_one_line(tmp_path):
    san = {"side_adapter_network.vit_model.cls_token": torch.zeros(1), "clip_rec_head.proj": torch.zeros(1)}
    assert "looks like a SAN checkpoint" in refusal(tmp_path, san)
    catseg = {
        "sem_seg_head.predictor.transformer.conv1.weight": torch.zeros(1),
        "sem_seg_head.predictor.clip_model.visual.conv1.weight": torch.zeros(1),
    }
    assert "looks like a CAT-Seg / OVRS checkpoint" in refusal(tmp_path, catseg)
    assert "looks like a CLIP checkpoint" in refusal(tmp_path, {"visual.conv1.weight": torch.zeros(1)})
    mask2former = {"backbone.patch_embed.proj.weight": torch.zeros(1)}
    mask2former["sem_seg_head.predictor.class_embed.weight"] = torch.zeros(1)
    assert "closed-vocabulary Mask2Former" in refusal(tmp_path, mask2former)
    message = refusal(tmp_path, {"backbone.stem.conv1.weight": torch.zeros(1)})
    assert "no sem_seg_head.predictor.* tensors" in message and "backbone.stem.conv1.weight" in message


def test_a_scan_file_with_a_wrong_tensor_names_it(tmp_path):
    from tests.helpers.hashed_weights import hashed_tensor

    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    state = {k: hashed_tensor(k, s) for k, s in json.loads(meta["keys"])}
    state.pop("fusion_decoder.ln.0.weight")
    state["fusion_decoder.extra.weight"] = torch.zeros(1)
    message = refusal(tmp_path, state)
    assert "first unexpected tensor 'fusion_decoder.extra.weight'" in message
    assert "first missing tensor 'integration.fusion.norms.0.weight'" in message


def test_pickled_objects_and_missing_files_are_refused(tmp_path):
    evil = tmp_path / "model_final.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "cfg": Path("/")}, evil)  # needs unpickling a Path
    with pytest.raises(CheckpointError, match="not a safetensors or weights-only file; it would have to be"):
        load_scan(evil)
    with pytest.raises(CheckpointError, match="no such file"):
        load_scan(tmp_path / "absent.pth")
