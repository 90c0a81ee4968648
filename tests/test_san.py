"""The SAN model: the segmenter interface, checkpoints, training and the paper-size architecture."""

import json

import pytest
import torch

from aeroseg.errors import CheckpointError
from aeroseg.mask_classification import MaskClassificationLoss
from aeroseg.san import SAN, SANConfig, san, san_large
from aeroseg.training.optimizer import optimizer_groups
from tests.helpers.tiny_san import tiny_san

CLASSES = ["ship", "harbor", "plane"]


@pytest.fixture(scope="module")
def model():
    return tiny_san().eval()


def images(seed=0, b=2, h=64, w=80):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_encode_once_segment_many_is_identical(model):
    x = images()
    with torch.no_grad():
        feats = model.encode(x)
        first = model.probabilities(feats, CLASSES)
        second = model.probabilities(feats, ["ship", "road"])
        assert torch.equal(first, model.probabilities(model.encode(x), CLASSES))
        assert torch.equal(second, model.probabilities(model.encode(x), ["ship", "road"]))
        assert torch.equal(model(x, CLASSES), model.scores(feats, CLASSES))
    assert first.shape == (2, 3, 64, 80) and second.shape == (2, 2, 64, 80)
    assert first.dtype == torch.float32 and 0 <= first.min() and first.max() <= 1
    assert len(feats.mask_logits) == len(feats.mask_embeddings) == 1  # inference decodes the last block only


def test_probabilities_keep_the_official_argmax_and_sum_to_at_most_one(model):
    with torch.no_grad():
        feats = model.encode(images(1))
        scores, probs = model.scores(feats, CLASSES), model.probabilities(feats, CLASSES)
    assert torch.equal(scores.argmax(1), probs.argmax(1))
    assert probs.sum(1).max() <= 1 + 1e-6
    below = scores.sum(1) <= 1
    assert torch.equal(probs.permute(0, 2, 3, 1)[below], scores.permute(0, 2, 3, 1)[below])


def test_class_permutation_equivariance_and_uint8_input(model):
    x = images(2)
    perm = [2, 0, 1]
    with torch.no_grad():
        feats = model.encode(x)
        probs = model.probabilities(feats, CLASSES)
        permuted = model.probabilities(feats, [CLASSES[i] for i in perm])
        torch.testing.assert_close(permuted, probs[:, perm], rtol=1e-5, atol=1e-6)
        as_bytes = (x * 255).round().to(torch.uint8)
        torch.testing.assert_close(
            model(as_bytes, CLASSES), model(as_bytes.float() / 255, CLASSES), rtol=0, atol=0
        )


def test_padding_does_not_leak_into_the_image_size(model):
    with torch.no_grad():
        feats = model.encode(images(3, b=1, h=50, w=70))
    assert feats.image_size == (50, 70) and feats.padded_size == (64, 96)  # multiples of 32
    assert model.scores(feats, CLASSES).shape == (1, 3, 50, 70)


def test_reference_protocol_resizes_the_shorter_side_and_back(model, monkeypatch):
    seen = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda x: seen.append(tuple(x.shape[-2:])) or encode(x))
    image = images(4, b=1, h=48, w=60)[0]
    probs = model.reference_probabilities(image, CLASSES)
    assert seen == [(640, 800)] and probs.shape == (3, 48, 60)
    assert 0 <= probs.min() and probs.max() <= 1
    uint8 = model.reference_probabilities((image * 255).round().byte(), CLASSES)
    assert uint8.shape == probs.shape


def test_text_embeddings_are_cached_per_class_list(model, monkeypatch):
    calls = []
    encode_text = model.classifier.encode_text
    monkeypatch.setattr(model.classifier, "encode_text", lambda c: calls.append(tuple(c)) or encode_text(c))
    model.train().eval()  # clears the cache
    with torch.no_grad():
        feats = model.encode(images(5, b=1))
        for classes in (CLASSES, CLASSES, ["road"], CLASSES):
            model.probabilities(feats, classes)
    assert calls == [tuple(CLASSES), ("road",), tuple(CLASSES)]
    with torch.inference_mode():
        model.probabilities(feats, CLASSES)  # inference tensors are kept apart from autograd ones
    x = images(5, b=1).requires_grad_(True)
    model.probabilities(model.encode(x), CLASSES).sum().backward()
    assert x.grad is not None and calls[3:] == [tuple(CLASSES)] * 2  # one text pass per mode


def test_save_and_load_round_trip_is_bit_identical(model, tmp_path):
    model.save_pretrained(tmp_path / "san")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "san").iterdir()
    }
    assert not [p for p in (tmp_path / "san").iterdir() if ".tmp" in p.name]
    meta = json.loads((tmp_path / "san" / "config.json").read_text())
    assert meta["format"] == "san" and SANConfig.from_dict(meta["config"]) == model.config
    loaded = SAN.from_pretrained(tmp_path / "san")
    assert loaded.config == model.config and not loaded.training
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = images(6)
    with torch.no_grad():
        assert torch.equal(
            loaded.probabilities(loaded.encode(x), CLASSES), model.probabilities(model.encode(x), CLASSES)
        )


def test_from_pretrained_refuses_other_directories(tmp_path):
    with pytest.raises(CheckpointError, match="needs config.json"):
        SAN.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "aeroseg", "config": {}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a SAN checkpoint") as info:
        SAN.from_pretrained(tmp_path)
    assert "\n" not in str(info.value)


def test_only_the_side_adapter_background_and_clip_position_embedding_train():
    model = tiny_san()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "clip_features.embeddings.position_embedding.weight" in trainable
    assert "classifier.bg_embed" in trainable
    assert all(n.startswith("side_adapter.") for n in trainable - {
        "clip_features.embeddings.position_embedding.weight", "classifier.bg_embed"})  # fmt: skip
    assert not any(n.startswith(("recognition.", "classifier.text")) for n in trainable)
    groups = model.param_groups()
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert len(grouped) == len(set(grouped))
    names = {g["name"]: g for g in groups}
    assert set(names) == {"side_adapter", "side_adapter_embeddings", "clip", "san"}
    assert all(g["lr"] == 1e-4 for g in groups)  # BASE_LR, BACKBONE_MULTIPLIER and CLIP_MULTIPLIER 1.0
    embeddings = {id(p) for p in names["side_adapter_embeddings"]["params"]}
    sa = model.side_adapter
    assert {id(sa.pos_embed), id(sa.query_embed), id(sa.query_pos_embed)} <= embeddings
    assert id(sa.blocks[0].layernorm_before.weight) in embeddings
    assert (
        id(sa.fusion_layers["layer_0"].input_proj[0].weight) not in embeddings
    )  # SAN's own LayerNorm decays
    frozen = tiny_san(train_clip_position_embedding=False, side_adapter_lr_multiplier=0.1)
    assert {g["name"]: g["lr"] for g in frozen.param_groups()} == pytest.approx(
        {"side_adapter": 1e-5, "side_adapter_embeddings": 1e-5, "san": 1e-4}
    )


def test_tiny_model_trains_five_steps_with_falling_loss():
    torch.manual_seed(0)
    model = tiny_san().train()
    criterion = MaskClassificationLoss(model.config)
    optimizer = torch.optim.AdamW(optimizer_groups(model, 1e-4))
    x = images(7, h=64, w=64)
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    masks[:, :, 32:] = 1
    masks[1, 40:] = 2
    masks[0, :8] = 255
    losses = []
    for step in range(5):
        output = model.forward_train(x, CLASSES)
        assert [lay.class_logits.shape for lay in output.layers] == [(2, 10, 4)] * 2
        loss = criterion(output, masks, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss["loss"].backward()
        for g in optimizer.param_groups:
            g["lr"] = 1e-3
        optimizer.step()
        losses.append(loss["loss"].item())
    assert losses[-1] < losses[0], losses
    assert set(loss) == {
        "loss",
        "loss_ce",
        "loss_mask",
        "loss_dice",
        "loss_ce_0",
        "loss_mask_0",
        "loss_dice_0",
    }


def test_paper_size_architectures_build_offline():
    model = SAN.from_config(san(), pretrained=False)
    count = lambda prefix: sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))  # noqa: E731
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # train_net.py's optimizer table of the released ViT-B/16 run (resources/san_vit_b_16.log): 8.37M
    assert round(trainable / 1e6, 2) == 8.37
    assert count("side_adapter.") == trainable - 197 * 768 - 512
    assert len(model.recognition.layers) == 3 and len(model.clip_features.layers) == 9
    assert model.window == 640


def test_config_round_trip_and_one_line_errors():
    config = san_large()
    assert SANConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.fusion_pairs == ((0, 0), (6, 1), (12, 2), (18, 3))
    for bad in (
        dict(fusion_map=("3-1",)),
        dict(fusion_map=("12->1",)),
        dict(deep_supervision=(9,)),
        dict(side_width=100),
        dict(clip_resolution=0),
        dict(prompt_templates=("no slot",)),
    ):
        with pytest.raises(ValueError) as info:
            san().replace(**bad)
        assert "\n" not in str(info.value)
