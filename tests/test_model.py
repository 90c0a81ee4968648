"""The AerOSeg model on tiny random backbones: every preset, what trains, invariances, checkpoints."""

from __future__ import annotations

import pytest
import torch

import aeroseg
from aeroseg.errors import CheckpointError, UserError
from aeroseg.losses import AerOSegLoss
from tests.helpers.tiny import build_tiny_model

SEEN = [
    "ship",
    "storage tank",
    "baseball diamond",
    "basketball court",
    "ground track field",
    "large vehicle",
    "swimming pool",
    "roundabout",
    "plane",
]  # 9 = back_projection_classes


def batch(seed: int = 0, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, size, size, generator=g)
    masks = torch.randint(0, len(SEEN), (2, size, size), generator=g)
    masks[:, :8] = 255  # some ignore pixels
    return images, masks


# AerOSeg's trained presets (SED, SAN and SCAN train in tests/test_train_families.py)
TRAINABLE_PRESETS = [
    name
    for name in aeroseg.presets()
    if aeroseg.registry.preset(name).family is aeroseg.registry.AEROSEG
    and name not in aeroseg.registry.untrained_presets()
]


@pytest.mark.parametrize("preset", TRAINABLE_PRESETS)
def test_preset_trains(preset):
    model = build_tiny_model(preset=preset).train()
    images, masks = batch()
    loss_fn = AerOSegLoss(model.config)
    out = model.forward_train(images, SEEN)
    assert out.logits.shape == (2, len(SEEN), 64, 64)
    assert (out.reconstruction is not None) == model.config.back_projection
    groups = model.param_groups()
    optimizer = torch.optim.AdamW([{**g, "lr": g["lr"] * 10} for g in groups])
    losses = []
    for _ in range(5):
        loss = loss_fn(model.forward_train(images, SEEN), masks)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def _expected_trainable(model) -> set[str]:
    """By name: CLIP q/v projections (not the last vision block's q, unused by the dense block), the new
    modules (with the learned upsamplers of the CLIP guidance), and nothing of the guidance encoder."""
    last = len(model.backbone.clip.vision_model.encoder.layers) - 1
    names = set()
    for name, _ in model.named_parameters():
        if name.startswith("backbone.clip."):
            is_qv = ".self_attn.q_proj." in name or ".self_attn.v_proj." in name
            unused_q = f"vision_model.encoder.layers.{last}.self_attn.q_proj" in name
            if is_qv and not unused_q:
                names.add(name)
        elif not name.startswith("guidance_encoder.") or name.startswith("guidance_encoder.upsample"):
            names.add(name)
    return names


@pytest.mark.parametrize("preset", ["aeroseg", "baseline", "config-a", "cat-seg", "aeroseg-sam2-hiera-b+"])
def test_exactly_the_intended_parameters_train(preset):
    model = build_tiny_model(preset=preset).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == _expected_trainable(model)
    images, masks = batch()
    AerOSegLoss(model.config)(model.forward_train(images, SEEN), masks)["loss"].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    grouped = sum(len(g["params"]) for g in model.param_groups())
    assert grouped == len(trainable)
    lrs = {g["name"]: g["lr"] for g in model.param_groups()}
    assert lrs == {"aeroseg": 2e-4, "clip": 2e-6}


def test_guidance_finetuning_is_a_config_value():
    model = build_tiny_model(preset="aeroseg", guidance_trainable=True).train()
    sam = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("guidance_encoder.")}
    assert sam and {g["name"] for g in model.param_groups()} == {"aeroseg", "clip", "guidance"}
    assert model.guidance_encoder.encoder.training
    frozen = build_tiny_model(preset="aeroseg").train()
    assert not frozen.guidance_encoder.encoder.training  # a frozen encoder stays in eval mode


def test_class_permutation_permutes_logits():
    model = build_tiny_model(preset="aeroseg").eval()
    images, _ = batch()
    classes = ["building", "road", "tree", "water", "car"]
    perm = [3, 0, 4, 1, 2]
    with torch.no_grad():
        logits = model(images, classes)
        permuted = model(images, [classes[i] for i in perm])
    torch.testing.assert_close(permuted, logits[:, perm], atol=1e-5, rtol=1e-5)
    assert torch.equal(permuted.argmax(1), logits[:, perm].argmax(1))


@pytest.mark.parametrize("num_classes", [1, 7, 300])
def test_any_number_of_classes(num_classes):
    model = build_tiny_model(preset="aeroseg").eval()
    images, _ = batch(size=48)
    with torch.no_grad():
        logits = model(images[:1], [f"class {i}" for i in range(num_classes)])
    assert logits.shape == (1, num_classes, 48, 48)
    assert torch.isfinite(logits).all()


def test_encode_image_then_segment_equals_forward():
    model = build_tiny_model(preset="aeroseg").eval()
    images, _ = batch()
    with torch.no_grad():
        feats = model.encode(images)
        for classes in (["harbor", "ship"], ["bridge", "ship", "plane"]):
            torch.testing.assert_close(model.segment(feats, classes), model(images, classes), rtol=0, atol=0)


def test_grid_follows_the_input_size():
    model = build_tiny_model(preset="aeroseg", clip_image_size=96).eval()
    assert model.backbone.grid_size == 12  # 96 / patch 8: nothing is tied to 24×24
    with torch.no_grad():
        feats = model.encode(torch.rand(1, 3, 40, 56))
        assert feats.clip.shape[-2:] == (12, 12) and feats.guidance.final.shape[-2:] == (12, 12)
        assert model.segment(feats, ["a", "b"]).shape == (1, 2, 40, 56)


@pytest.mark.parametrize("target, channels", [("sam", 16), ("clip", 16), ("rgb", 3)])
def test_reconstruction_targets(target, channels):
    model = build_tiny_model(preset="aeroseg", reconstruction_target=target).train()
    out = model.forward_train(batch()[0], SEEN)
    assert out.reconstruction.shape == out.target.shape == (2, channels, 8, 8)
    assert not out.target.requires_grad


def test_save_and_reload_is_bit_identical(tmp_path):
    model = build_tiny_model(preset="aeroseg").eval()
    model.save_pretrained(tmp_path / "ckpt")
    names = {p.name for p in (tmp_path / "ckpt").iterdir()}  # with the tokenizer the model was built with
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names and not any(
        n.startswith(".") for n in names
    )
    loaded = aeroseg.AerOSeg.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    reference, restored = model.state_dict(), loaded.state_dict()
    assert reference.keys() == restored.keys()
    assert all(torch.equal(reference[k], restored[k]) for k in reference)
    images, _ = batch()
    with torch.no_grad():
        assert torch.equal(loaded(images, ["a", "b"]), model(images, ["a", "b"]))


def test_sam2_checkpoint_roundtrip(tmp_path):
    model = build_tiny_model(preset="aeroseg-sam2.1-hiera-b+").eval()
    model.save_pretrained(tmp_path)
    loaded = aeroseg.AerOSeg.from_pretrained(tmp_path)
    images, _ = batch()
    with torch.no_grad():
        assert torch.equal(loaded(images, ["a"]), model(images, ["a"]))


def test_from_pretrained_rejects_other_directories(tmp_path, tiny_backbones):
    with pytest.raises(CheckpointError, match="not an AerOSeg checkpoint"):
        aeroseg.AerOSeg.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not an AerOSeg checkpoint"):
        aeroseg.AerOSeg.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        aeroseg.AerOSeg.from_pretrained(tmp_path / "missing")


def test_build_errors_are_one_line():
    with pytest.raises(UserError, match="unknown preset"):
        aeroseg.build("no-such-preset", pretrained=False)
    with pytest.raises(UserError, match="unknown AerOSegConfig field"):
        aeroseg.build("aeroseg", pretrained=False, no_such_field=1)
    with pytest.raises(UserError, match="needs SAM guidance"):
        aeroseg.build("baseline", pretrained=False, back_projection=True, reconstruction_target="sam")
    with pytest.raises(UserError, match="clip=FILE"):
        aeroseg.build("aeroseg-skyclip")
    with pytest.raises(CheckpointError, match="does not exist"):
        aeroseg.build("aeroseg", clip="./missing-clip.pt")


def test_unreachable_hub_id_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="--clip DIR"):
        aeroseg.build("aeroseg", clip="someone/not-downloaded-clip")


def test_build_from_original_checkpoint_files(tmp_path):
    """Backbones named by the files users already have: an open_clip .pt and a segment-anything .pth."""
    from tests.helpers import original_formats as orig
    from tests.helpers.tiny import TINY_MODEL

    orig.save_open_clip_training(orig.openai_clip_state_dict(vocab=49408, context=77), tmp_path / "clip.pt")
    torch.save(orig.segment_anything_state_dict(image=64, patch=8), tmp_path / "sam_vit_b_tiny.pth")
    model = aeroseg.build(
        "aeroseg",
        clip=str(tmp_path / "clip.pt"),
        guidance=str(tmp_path / "sam_vit_b_tiny.pth"),
        **{**TINY_MODEL, "guidance_layers": (1, 2)},
    ).eval()
    with torch.no_grad():
        assert model(batch()[0], ["road", "tree"]).shape == (2, 2, 64, 64)
    model.save_pretrained(tmp_path / "ckpt")  # self-contained: reloads without the original files
    (tmp_path / "clip.pt").unlink()
    assert aeroseg.AerOSeg.from_pretrained(tmp_path / "ckpt").config.clip == str(tmp_path / "clip.pt")


def test_sam3_guidance_checkpoint_roundtrip(tmp_path):
    """aeroseg-sam3: SAM 3's FPN levels as guidance, frozen; saved and reloaded bit-identically."""
    model = build_tiny_model(preset="aeroseg-sam3").eval()
    encoder = model.guidance_encoder
    assert type(encoder).__name__ == "Sam3GuidanceEncoder" and encoder.final_dim == 32
    assert not any(p.requires_grad for p in encoder.parameters())
    assert torch.equal(encoder.mean, torch.full((1, 3, 1, 1), 0.5))
    model.save_pretrained(tmp_path)
    loaded = aeroseg.AerOSeg.from_pretrained(tmp_path)
    reference, restored = model.state_dict(), loaded.state_dict()
    assert reference.keys() == restored.keys() and all(
        torch.equal(reference[k], restored[k]) for k in reference
    )
    images, _ = batch()
    with torch.no_grad():
        assert torch.equal(loaded(images, ["a", "b"]), model(images, ["a", "b"]))
