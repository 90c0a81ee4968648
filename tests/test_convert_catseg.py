"""CAT-Seg and OVRS checkpoints run in aeroseg with the official code's outputs.

``fixtures/catseg_official.safetensors`` was made by ``fixtures/make_catseg_fixture.py``, which runs the
official CAT-Seg and OVRS code (tiny CLIP, released aggregator widths) with every parameter a hash of its key
name. Here the same checkpoint is rebuilt from the saved key -> shape list in the trainer's ``{"model": ...}``
layout, loaded through the converter, and run as the official code ran: training mode (2×2 class pooling) on
a 384² image, and eval mode as ``eval.sh`` (no pooling) on the four 384² windows and the global view of a 640²
image, with 9 and 15 iSAID classes.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

import aeroseg
from aeroseg import AerOSeg
from aeroseg.cli import main
from aeroseg.errors import CheckpointError
from tests.helpers.hashed_weights import hashed_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "catseg_official.safetensors"
KINDS = ("cat-seg", "ovrs")


@pytest.fixture(scope="module")
def official():
    with safe_open(str(FIXTURE), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def checkpoints(official, tmp_path_factory):
    """The fixture's checkpoints as their trainer writes them: ``{"model": state_dict, "iteration": N}``."""
    _, meta = official
    paths = {}
    for kind in KINDS:
        paths[kind] = tmp_path_factory.mktemp(kind) / "model_final.pth"
        state = hashed_state_dict(json.loads(meta[f"{kind}.keys"]))
        torch.save({"model": state, "iteration": 79999}, paths[kind])
    return paths


def images(official):
    """The 640² eval image and the 384² training image in [0, 1], as the fixture script made them."""
    small = official[0]["image"].float() / 255
    image = small.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (3, 640, 640)
    return image, image[:, :384, :384]


def eval_views(image):
    """CAT-Seg's sliding-window views (kernel 384, stride 256 on 640²) and the whole image at 384²."""
    crops = [image[:, y : y + 384, x : x + 384] for y in (0, 256) for x in (0, 256)]
    whole = F.interpolate(image[None], size=(384, 384), mode="bilinear", align_corners=False)[0]
    return torch.stack([*crops, whole])


def head_logits(model, views, classes):
    """Logits at the decoder's 96² output (the official segmentation head's output size)."""
    with torch.no_grad():
        feats = replace(model.encode(views), image_size=(96, 96))
        return model.segment(feats, classes)


def assert_matches(ours, theirs):
    scale = theirs.abs().max()
    error = ((ours - theirs).abs().max() / scale).item()
    assert error < 1e-4, f"max |ours - official| = {error:.2e} of max |official|"


@pytest.mark.parametrize("kind", KINDS)
def test_official_logits_in_training_and_eval_mode(official, checkpoints, kind):
    tensors, meta = official
    model = AerOSeg.from_pretrained(checkpoints[kind])
    assert model.config.preset == kind and model.config.rotations == (
        (0,) if kind == "cat-seg" else (0, 90, 180, 270)
    )
    image, train_image = images(official)
    for n in (9, 15):
        classes = json.loads(meta["classes"])[:n]
        model.train()
        assert_matches(
            head_logits(model, train_image[None], classes)[..., ::2, ::2], tensors[f"{kind}.train.{n}"]
        )
        model.eval()
        assert_matches(
            head_logits(model, eval_views(image), classes)[..., ::2, ::2], tensors[f"{kind}.eval.{n}"]
        )


def test_every_entry_point_takes_the_file(official, checkpoints, tmp_path, monkeypatch):
    path = checkpoints["cat-seg"]
    _, train_image = images(official)
    classes = json.loads(official[1]["classes"])[:9]
    expected = AerOSeg.from_pretrained(path)(train_image[None], classes)
    built = aeroseg.build("cat-seg", checkpoint=str(path)).eval()
    torch.testing.assert_close(built(train_image[None], classes), expected, rtol=0, atol=0)

    import huggingface_hub

    def download(repo, filename, **kwargs):
        assert (repo, filename, kwargs.get("repo_type")) == (
            "hamacojr/CAT-Seg-weights",
            "model_base.pth",
            "space",
        )
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    from_hub = AerOSeg.from_pretrained("hf://spaces/hamacojr/CAT-Seg-weights/model_base.pth")
    torch.testing.assert_close(from_hub(train_image[None], classes), expected, rtol=0, atol=0)

    out = tmp_path / "converted"
    assert main(["convert", str(path), str(out), "--quiet"]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    converted = AerOSeg.from_pretrained(out)
    assert converted.config.preset == "cat-seg"
    torch.testing.assert_close(converted(train_image[None], classes), expected, rtol=0, atol=0)
    assert main(["convert", str(path), str(out), "--quiet"]) == 2  # never overwrites


def test_predict_cli_runs_a_catseg_file(checkpoints, tmp_path):
    from PIL import Image

    scene = tmp_path / "scene.png"
    Image.fromarray((torch.rand(96, 128, 3) * 255).byte().numpy()).save(scene)
    argv = ["predict", str(scene), "--checkpoint", str(checkpoints["ovrs"]), "--classes", "ship,plane,harbor"]
    assert main([*argv, "-o", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 0
    assert any((tmp_path / "out").iterdir())


def test_a_file_of_another_model_names_its_first_unexpected_and_missing_tensors(checkpoints, tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"model": {"backbone.stem.conv1.weight": torch.zeros(2, 3, 3, 3)}}, other)
    with pytest.raises(CheckpointError) as info:
        AerOSeg.from_pretrained(other)
    message = str(info.value)
    assert "\n" not in message and "backbone.stem.conv1.weight" in message and "missing" in message

    state = torch.load(checkpoints["ovrs"], weights_only=True)["model"]
    state.pop("sem_seg_head.predictor.transformer.head.bias")
    state["sem_seg_head.predictor.transformer.head2.weight"] = torch.zeros(1)
    torch.save({"model": state}, other)
    with pytest.raises(CheckpointError) as info:
        AerOSeg.from_pretrained(other)
    message = str(info.value)
    assert "\n" not in message
    assert "first unexpected tensor 'sem_seg_head.predictor.transformer.head2.weight'" in message
    assert "first missing tensor 'decoder.head.bias'" in message


def test_pickled_objects_are_refused(tmp_path):
    evil = tmp_path / "model_final.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "cfg": Path("/")}, evil)  # needs unpickling a Path
    with pytest.raises(CheckpointError, match="not a safetensors or weights-only file") as info:
        AerOSeg.from_pretrained(evil)
    assert "never does for files it did not write" in str(info.value) and "weights_only" not in str(
        info.value
    )


def test_evaluate_cli_runs_a_catseg_file(checkpoints, tmp_path):
    from tests.test_evaluate import CLASSES, make_dataset

    data, out = make_dataset(tmp_path / "toy"), tmp_path / "eval.json"
    argv = ["evaluate", "--data", str(data), "--checkpoint", str(checkpoints["cat-seg"]), "--json", str(out)]
    assert main([*argv, "--device", "cpu", "--workers", "0", "--quiet"]) == 0
    document = json.loads(out.read_text())
    assert len(document["confusion_matrix"]) == len(CLASSES)
