"""SCAN checkpoints run in aeroseg with the official code's outputs and losses.

``fixtures/scan_official.safetensors`` was made by ``fixtures/make_scan_fixture.py``, which runs the official
SCAN code (its Swin, Mask2Former's pixel decoder, its predictor, integration and region CLIP; tiny sizes) with
every parameter a hash of its key name. Here the same checkpoint is rebuilt from the saved key -> shape list in
the trainer's ``{"model": ...}`` layout, loaded through the converter and run: inference with 9 and 15 iSAID
classes from one encode, and one training step's loss with the official matcher's assignments.
"""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from aeroseg.convert.scan import load_scan
from aeroseg.mask_classification import MaskClassificationLoss
from tests.helpers.hashed_weights import hashed_tensor

FIXTURE = Path(__file__).parent / "fixtures" / "scan_official.safetensors"


@pytest.fixture(scope="module")
def official():
    with safe_open(str(FIXTURE), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def checkpoint(official, tmp_path_factory):
    """The fixture's checkpoint as their trainer writes it (buffers zero: the converter drops them)."""
    _, meta = official
    state = {key: hashed_tensor(key, shape) for key, shape in json.loads(meta["keys"])}
    state.update({key: torch.zeros(shape) for key, shape in json.loads(meta["buffers"])})
    path = tmp_path_factory.mktemp("scan") / "model_final.pth"
    torch.save({"model": state, "iteration": 119999}, path)
    return path


@pytest.fixture(scope="module")
def model(official, checkpoint):
    """The converted model with the fixture's seed for the contextual shift and its training settings
    (``DROP_PATH_RATE`` 0)."""
    return load_scan(checkpoint, shift_seed=int(official[1]["seed"]), swin_drop_path=0.0)


def image(official) -> torch.Tensor:
    small = official[0]["image"].float() / 255
    return small.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (3, 452, 472) in [0, 1]


def relative(ours, theirs) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


@pytest.fixture(scope="module")
def features(model, official):
    with torch.no_grad():
        return model.eval().encode(image(official)[None])


def test_the_converter_reads_the_preset_and_sizes_from_the_file(model, official):
    tiny = json.loads(official[1]["tiny"])
    c = model.config
    assert c.preset == "scan" and c.swin_embed_dim == tiny["MODEL.SWIN.EMBED_DIM"]
    assert c.swin_depths == tuple(tiny["MODEL.SWIN.DEPTHS"]) and c.swin_heads == tuple(
        tiny["MODEL.SWIN.NUM_HEADS"]
    )
    assert (c.conv_dim, c.hidden_dim, c.scan_dim, c.decoder_layers) == (64, 64, 32, 10)


def test_swin_features_match(model, official):
    x = image(official)[None] * 255
    x = F.pad((x - model.pixel_mean) / model.pixel_std, (0, 8, 0, 28))  # to 480², a multiple of 32
    with torch.no_grad():
        res5 = model.backbone(x)[-1]
    assert relative(res5, official[0]["eval.9.res5"]) < 1e-4


@pytest.mark.parametrize("n", [9, 15])
def test_inference_matches_for_two_class_counts_from_one_encode(model, official, features, n):
    tensors, meta = official
    classes = json.loads(meta["classes"])[:n]
    with torch.no_grad():
        class_logits = model.class_logits(features, classes)[-1]
        assert relative(class_logits, tensors[f"eval.{n}.class_logits"]) < 1e-4
        assert relative(features.mask_logits[-1][..., ::4, ::4], tensors[f"eval.{n}.mask_logits"]) < 1e-4
        assert torch.equal(features.valid[0], tensors[f"eval.{n}.valid"].bool())
        weights = model.classifier(classes)
        region = model.classifier.logits(features.region_embeddings[0], weights)
        scores = model.scores(features, classes)
        final = model.scores(features, classes, size=(300, 320))
    # A region is the box of the pixels whose mask probability exceeds 0.4; a pixel within ~1e-6 of it (the
    # size of float32 differences between the two decoders) changes its crop, so a few regions differ more.
    theirs = tensors[f"eval.{n}.region_logits"]
    per_region = (region - theirs).abs().amax(1) / theirs.abs().max()
    assert (per_region < 1e-4).float().mean() > 0.9 and per_region.max() < 1e-2
    assert relative(scores[0][:, ::4, ::4], tensors[f"eval.{n}.scores"]) < 1e-4
    assert relative(final[0][:, ::4, ::4], tensors[f"eval.{n}.final"]) < 1e-4


def test_training_loss_and_assignments_match(model, official):
    tensors, meta = official
    x = image(official)[:, :448, :448]
    images = torch.stack([x, x.flip(-1)])
    classes = json.loads(meta["classes"])[:9]
    model.train()
    model.integration.transformer.eval()  # the fixture ran the lightweight transformer without its dropout
    try:
        output = model.forward_train(images, classes)
    finally:
        model.eval()
    criterion = MaskClassificationLoss(model.config)
    assignments = []
    criterion.set_criterion.matcher.register_forward_hook(lambda m, a, out: assignments.append(out))
    generator = torch.Generator().manual_seed(int(meta["seed"]))
    losses = criterion(output, tensors["targets"].long(), generator=generator)
    weights = criterion.set_criterion.weight_dict(len(output.layers))
    official_names = {k.removeprefix("train.") for k in tensors if k.startswith("train.loss")}
    assert set(weights) == official_names  # the 10th auxiliary prediction is not weighted, as theirs
    for name, weight in weights.items():
        theirs = tensors[f"train.{name}"]
        assert abs(weight * losses[name].item() - theirs.item()) <= 1e-4 * abs(theirs.item()), name
    total = sum(tensors[f"train.{k}"] for k in weights)
    assert abs(losses["loss"].item() - total.item()) <= 1e-4 * total.item()
    # their criterion matched the unweighted 10th auxiliary prediction last; ours does not match it
    assert len(assignments) == len(output.layers)
    for call, indices in enumerate(assignments):
        for b, (rows, cols) in enumerate(indices):
            assert torch.equal(torch.stack([rows, cols]), tensors[f"train.assignment.{call}.{b}"])


def test_the_fixture_records_the_upstream_commits(official):
    commits = json.loads(official[1]["commits"])
    assert commits["scan"].startswith("097fbbd") and commits["mask2former"].startswith("9b0651c")
    assert commits["detectron2"]
