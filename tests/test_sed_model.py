"""The SED model through the segmenter interface: encode once / segment many, class-permutation equivariance,
checkpoints, training, optimizer groups, the inference protocol, and the paper-size builds."""

import pytest
import torch
import torch.nn.functional as F

from aeroseg.convert.sed import load_sed
from aeroseg.sed import SED, SEDLoss, sed, sed_large
from aeroseg.sed.feature_aggregation import ChannelsLastLayerNorm
from aeroseg.training.optimizer import optimizer_groups
from tests.helpers.sed_fixture import classes, clip_size, eval_image, train_batch, write_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("sed") / "model_final.pth")


@pytest.fixture
def model(checkpoint):
    return load_sed(checkpoint, clip_image_size=clip_size())


def image(size=(160, 224)):
    return F.interpolate(eval_image("eval").float() / 255, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("rejection", [False, True])
def test_encode_once_segment_many_gives_identical_results(model, rejection):
    model.config = model.config.replace(early_rejection=rejection)
    x = image()
    with torch.no_grad():
        feats = model.encode(x)
        first, second = classes(9), classes(15)[9:]
        a, b = model.probabilities(feats, first), model.probabilities(feats, second)
        again = model.probabilities(feats, first)
        torch.testing.assert_close(a, model.probabilities(model.encode(x), first), rtol=0, atol=0)
        torch.testing.assert_close(b, model.probabilities(model.encode(x), second), rtol=0, atol=0)
        torch.testing.assert_close(again, a, rtol=0, atol=0)
        logits = model(x, first)
    assert a.shape == (1, 9, 160, 224) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert logits.shape == (1, 9, 160, 224)


@pytest.mark.parametrize("rejection", [False, True])
def test_class_permutation_equivariance(model, rejection):
    """Every module treats the classes alike (per-class convolutions, attention over the class set)."""
    model.config = model.config.replace(early_rejection=rejection, early_rejection_topk=2)
    names = classes(9)
    order = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        feats = model.encode(eval_image("blocks"))
        probs = model.probabilities(feats, names)
        permuted = model.probabilities(feats, [names[i] for i in order])
    torch.testing.assert_close(permuted, probs[:, order], rtol=1e-4, atol=1e-5)


def test_a_batch_is_its_images_segmented_one_by_one(model):
    model.config = model.config.replace(early_rejection=True)
    x = torch.cat([image(), image().flip(-1)])
    with torch.no_grad():
        batch = model.probabilities(model.encode(x), classes(9))
        single = torch.cat([model.probabilities(model.encode(x[i : i + 1]), classes(9)) for i in range(2)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


def test_save_pretrained_from_pretrained_round_trip_is_bit_identical(model, tmp_path):
    model.config = model.config.replace(early_rejection=True, early_rejection_topk=2)
    model.save_pretrained(tmp_path / "sed")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "sed").iterdir()
    }
    assert not [p for p in (tmp_path / "sed").iterdir() if p.name.startswith(".")]
    loaded = SED.from_pretrained(tmp_path / "sed")
    assert loaded.config == model.config and loaded.clip_arch == model.clip_arch
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.no_grad():
        x = image()
        torch.testing.assert_close(loaded(x, classes(9)), model.eval()(x, classes(9)), rtol=0, atol=0)


def test_from_pretrained_refuses_other_directories_in_one_line(tmp_path):
    from aeroseg.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a SED checkpoint directory") as info:
        SED.from_pretrained(tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "config.json").write_text('{"format": "aeroseg", "config": {}}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no SED config"):
        SED.from_pretrained(tmp_path)


def test_param_groups_follow_the_official_optimizer(model):
    groups = {g["name"]: g for g in model.param_groups()}
    assert groups["sed"]["lr"] == 2e-4 and groups["clip"]["lr"] == pytest.approx(2e-6)
    assert groups["clip"]["lr_multiplier"] == 0.01
    clip = {id(p) for p in groups["clip"]["params"]}
    assert clip == {id(p) for p in model.encoder.parameters()}  # CLIP_FINETUNE "full": the image tower
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    assert sum(len(g["params"]) for g in groups.values()) == sum(
        1 for p in model.parameters() if p.requires_grad
    )
    # train_net.py: no decay on torch.nn norms (GroupNorm, LayerNorm, ConvNeXt's), decay on SED's own LayerNorm
    no_decay = {id(p) for g in optimizer_groups(model, 1e-4) if g["weight_decay"] == 0 for p in g["params"]}
    ours = next(m for m in model.modules() if isinstance(m, ChannelsLastLayerNorm))
    assert id(ours.weight) not in no_decay
    assert id(model.decoder.stages[0].fusion.fuse[1].weight) in no_decay
    assert id(model.encoder.trunk.layernorm.weight) in no_decay
    frozen = load_sed_frozen(model)
    assert [g["name"] for g in frozen.param_groups()] == ["sed"]


def load_sed_frozen(model):
    """The same model with ``clip_finetune="frozen"``."""
    return SED(
        model.config.replace(clip_finetune="frozen"),
        model.encoder,
        model.text_encoder,
        model.cost_map,
        model.decoder,
        model.clip_arch,
    )


def test_the_tiny_model_trains_with_falling_loss(model):
    torch.manual_seed(0)
    images, masks = train_batch()
    images, masks = images[:, :, ::2, ::2], masks[:, ::2, ::2]  # 192² keeps the loop short
    criterion = SEDLoss(model.config)
    groups = [{**g, "lr": g["lr"] * 5} for g in model.param_groups()]
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
    model.train()
    losses = []
    for _ in range(5):
        loss = criterion(model.forward_train(images, classes(9)), masks)["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)  # SOLVER.CLIP_GRADIENTS full_model 0.01
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] and all(torch.isfinite(torch.tensor(losses)))


def test_reference_probabilities_is_the_whole_image_protocol(model):
    model.eval()
    x = image((96, 144))[0]  # shorter side 96 -> 640 (test_min_size), longer 960
    with torch.no_grad():
        ours = model.reference_probabilities(x, classes(9))
        resized = F.interpolate(
            x[None], size=(640, 960), mode="bilinear", align_corners=False, antialias=True
        )
        low = model._decode(model.encode(resized), classes(9)).sigmoid()
        expected = F.interpolate(low, size=(96, 144), mode="bilinear", align_corners=False)[0]
    assert ours.shape == (9, 96, 144)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_synonyms_are_averaged_per_template(model):
    model.eval()
    with torch.no_grad():
        both = model.encode_text(["storage tank, tank"])[0]
        parts = model.encode_text(["storage tank", "tank"])
    torch.testing.assert_close(both, F.normalize(parts.mean(0), dim=-1), rtol=1e-5, atol=1e-6)


def test_window_is_the_clip_input():
    assert SED.window == sed().clip_image_size == sed_large().clip_image_size == 768


@pytest.mark.parametrize("preset", [sed, sed_large])
def test_presets_are_the_released_configs(preset):
    config = preset()
    assert (
        config.clip_image_size == 768
        and config.kernel_sizes == (9, 9, 9)
        and len(config.prompt_templates) == 80
    )
    assert config.class_pool == (2, 2) and config.class_pool_eval == (1, 1)
    assert not config.early_rejection and config.early_rejection_topk == 1
    with pytest.raises(ValueError, match="decoder_cost_dims"):
        config.replace(prompt_templates=("a photo of a {}.",))


def test_pretrained_false_builds_the_paper_size_model_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = SED.from_config(sed(), pretrained=False)
    assert model.encoder.widths == (128, 256, 512, 1024)
    assert model.text_encoder.clip.config.hidden_size == 640 and model.clip_arch["head"] == "linear"
    assert 170e6 < sum(p.numel() for p in model.parameters()) < 200e6
