"""SCAN's model interface on a tiny model: encode once / segment many, probabilities, the protocol, checkpoints,
parameter groups, training, and the paper-size architecture."""

import json
import random

import pytest
import torch

from aeroseg.errors import CheckpointError
from aeroseg.mask_classification import MaskClassificationLoss
from aeroseg.scan import SCAN, scan
from tests.helpers.tiny_scan import tiny_scan

CLASSES = ["ship", "harbor", "plane", "bridge"]


@pytest.fixture(scope="module")
def model():
    return tiny_scan()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.rand(2, 3, 100, 120)


def test_encode_once_segment_many_is_identical(model, images):
    with torch.no_grad():
        feats = model.encode(images)
        first = model.probabilities(feats, CLASSES)
        other = model.probabilities(feats, CLASSES[:2] + ["road"])
        again = model.probabilities(feats, CLASSES)
        direct = model(images, CLASSES)
    assert other.shape == (2, 3, 100, 120)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert first.shape == (2, 4, 100, 120) and 0 <= first.min() and first.max() <= 1
    torch.testing.assert_close(model.scores(feats, CLASSES), direct, rtol=0, atol=0)


def test_encode_is_deterministic_with_the_shift_seed_and_official_without(images):
    seeded = tiny_scan()
    with torch.no_grad():
        a = seeded.encode(images).region_embeddings[0]
        b = seeded.encode(images).region_embeddings[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    unseeded = tiny_scan(shift_seed=None)
    with torch.no_grad():
        random.seed(seeded.config.shift_seed)
        c = unseeded.encode(images).region_embeddings[0]
    torch.testing.assert_close(c, a, rtol=0, atol=0)  # the global random module, seeded alike


def test_scores_are_equivariant_to_the_order_of_the_classes(model, images):
    order = [2, 0, 3, 1]
    with torch.no_grad():
        feats = model.encode(images)
        scores = model.scores(feats, CLASSES)
        permuted = model.scores(feats, [CLASSES[i] for i in order])
    torch.testing.assert_close(permuted, scores[:, order], rtol=1e-5, atol=1e-6)


def test_uint8_images_and_the_reference_protocol(model, images):
    as_bytes = (images * 255).round().to(torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(as_bytes, CLASSES), model(as_bytes.float() / 255, CLASSES))
    probs = model.reference_probabilities(as_bytes[0], CLASSES)
    assert probs.shape == (4, 100, 120) and 0 <= probs.min() and probs.max() <= 1
    assert SCAN.window == scan().test_size == 640  # predict's window: the preset's test size


def test_without_the_ensemble_and_with_region_probabilities_only(images):
    plain = tiny_scan(clip_ensemble=False)
    with torch.no_grad():
        feats = plain.encode(images)
        assert feats.region_embeddings is None
        assert plain.scores(feats, CLASSES).shape == (2, 4, 100, 120)
        regions_only = tiny_scan(ensemble_weight=0.0)
        assert regions_only.probabilities(regions_only.encode(images), CLASSES).shape == (2, 4, 100, 120)
        none_valid = tiny_scan(mask_threshold=1.0)  # no region: p_in^(1 - w) for every proposal
        feats = none_valid.encode(images)
        assert feats.region_embeddings[0].shape == (0, 16) and not feats.valid[0].any()
        assert none_valid.scores(feats, CLASSES).isfinite().all()


def test_save_and_load_round_trip_is_bit_identical(model, images, tmp_path):
    model.save_pretrained(tmp_path / "scan")
    meta = json.loads((tmp_path / "scan" / "config.json").read_text())
    assert meta["format"] == "scan" and meta["config"]["preset"] == "scan"
    loaded = SCAN.from_pretrained(tmp_path / "scan")
    assert loaded.config == model.config
    for (k, a), (j, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == j and torch.equal(a, b), k
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, CLASSES), model(images, CLASSES), rtol=0, atol=0)
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "scan").iterdir())


def test_from_pretrained_refuses_other_directories(tmp_path):
    with pytest.raises(CheckpointError, match="not a SCAN checkpoint directory"):
        SCAN.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "san", "config": {}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no SCAN config"):
        SCAN.from_pretrained(tmp_path)


def test_param_groups_follow_the_official_optimizer():
    model = tiny_scan(backbone_lr_multiplier=0.1, lr=1e-3)
    groups = {g["name"]: g for g in model.param_groups()}
    assert set(groups) == {"backbone", "backbone_no_decay", "scan", "scan_no_decay"}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["backbone"]["lr_multiplier"] == 0.1
    assert groups["scan"]["lr"] == 1e-3 and "weight_decay" not in groups["scan"]
    assert groups["scan_no_decay"]["weight_decay"] == 0.0 == groups["backbone_no_decay"]["weight_decay"]
    ids = [id(p) for g in groups.values() for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable)
    no_decay = {id(p) for p in groups["scan_no_decay"]["params"] + groups["backbone_no_decay"]["params"]}
    table = (
        model.backbone.swin.encoder.layers[0]
        .blocks[0]
        .attention.relative_position_bias.relative_position_bias_table
    )
    assert id(table) in no_decay and id(model.decoder.transformer.queries_features.weight) in no_decay
    assert id(model.integration.fusion.norms[0].weight) in no_decay
    assert id(model.pixel_decoder.level_embed) not in no_decay  # a plain Parameter: decayed, as the official
    assert id(model.classifier.non_object_embedding) in {id(p) for p in groups["scan"]["params"]}
    frozen = [
        *model.global_clip.parameters(),
        *model.region_clip.parameters(),
        *model.classifier.text_model.parameters(),
    ]
    assert not any(p.requires_grad for p in frozen)


def test_forward_train_keeps_the_weighted_predictions():
    model = tiny_scan().train()
    images = torch.rand(1, 3, 64, 64)
    out = model.forward_train(images, CLASSES)
    assert len(out.layers) == 3  # decoder_layers 3: 4 predictions, the first 2 auxiliary and the final one
    assert out.layers[0].class_logits.shape == (1, 10, 5) and out.layers[0].mask_logits.shape == (
        1,
        10,
        16,
        16,
    )
    single = tiny_scan(deep_supervision=False).train().forward_train(images, CLASSES)
    assert len(single.layers) == 1


def test_a_tiny_model_trains_five_steps_with_falling_loss():
    """A plain loop (AdamW on ``param_groups``, the official gradient clipping); stochastic depth, dropout and
    the point draws are fixed so that the losses compare."""
    torch.manual_seed(0)
    model = tiny_scan(lr=1e-4, swin_drop_path=0.0, integration_dropout=0.0).train()
    criterion = MaskClassificationLoss(model.config)
    optimizer = torch.optim.AdamW(model.param_groups(), weight_decay=0.01)
    images = torch.rand(2, 3, 64, 64)
    masks = torch.zeros(2, 64, 64, dtype=torch.long)
    masks[:, 32:] = 1
    masks[1, :, :16] = 255
    losses = []
    for _ in range(5):
        generator = torch.Generator().manual_seed(0)
        loss = criterion(model.forward_train(images, CLASSES[:2]), masks, generator=generator)["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)  # SOLVER.CLIP_GRADIENTS full_model 0.01
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < min(losses[0], losses[1]) and losses[-1] < 0.9 * losses[0], losses


def test_the_paper_size_model_has_the_official_parameter_counts():
    with torch.device("meta"):
        model = SCAN.from_config(scan(), pretrained=False)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # the official SCAN(configs/scan_vitB.yaml): 371,461,178 parameters with CLIP's unused logit_scale
    assert (total, trainable) == (371_461_177, 135_647_801)


def test_from_config_loads_the_clip_and_swin_it_names(tmp_path):
    from transformers.models.swin.modeling_swin import SwinModel

    from aeroseg.convert.tokenizer import clip_tokenizer
    from aeroseg.scan.swin_backbone import swin_config
    from tests.helpers.tiny_scan import tiny_clip, tiny_config

    config = tiny_config(clip=str(tmp_path / "clip"), swin=str(tmp_path / "swin"))
    clip = tiny_clip(seed=3)
    clip.save_pretrained(tmp_path / "clip")
    clip_tokenizer().save_pretrained(tmp_path / "clip")
    SwinModel(swin_config(config), add_pooling_layer=False).save_pretrained(tmp_path / "swin")
    model = SCAN.from_config(config, pretrained=True)
    vision = clip.vision_model.state_dict()
    for part in (
        model.region_clip.vision_model,
        model.global_clip.vision_model,
    ):  # two copies, as the official
        assert all(torch.equal(v, vision[k]) for k, v in part.state_dict().items())
    assert model.region_clip.vision_model is not model.global_clip.vision_model
    assert torch.equal(model.classifier.text_projection.weight, clip.text_projection.weight)
