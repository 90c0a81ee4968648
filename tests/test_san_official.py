"""SAN checkpoints run in aeroseg with the official code's outputs and loss.

``fixtures/san_official.safetensors`` was made by ``fixtures/make_san_fixture.py``, which runs the official
SAN code (``MendelXu/SAN``, tiny CLIP and side adapter in their layout, every tensor a hash of its key name).
Here the same checkpoints are rebuilt from the saved key -> shape lists in the trainer's ``{"model": ...}``
layout, loaded through :func:`aeroseg.convert.san.load_san`, and run as the official code ran: inference on a
640×680 image with output size 480×510 for 9 and 15 classes (a ViT-B/16-like and a ViT-L/14@336-like CLIP),
and one training step's matching and loss on two 640² images.
"""

import json

import pytest
import torch

from aeroseg.convert.san import load_san
from aeroseg.mask_classification import MaskClassificationLoss
from tests.helpers.tiny_san import official_checkpoint, read_fixture

KINDS = ("san", "san-large")


@pytest.fixture(scope="module")
def official():
    return read_fixture()


@pytest.fixture(scope="module")
def models(official, tmp_path_factory):
    _, meta = official
    folder = tmp_path_factory.mktemp("san")
    return {kind: load_san(official_checkpoint(meta, kind, folder / f"{kind}.pth")) for kind in KINDS}


def assert_matches(ours, theirs, tolerance=1e-4):
    assert ours.shape == theirs.shape
    error = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    assert error < tolerance, f"max |ours - official| = {error:.2e} of max |official|"


def inputs(official):
    tensors, _ = official
    small = tensors["image"].float() / 255
    image = small.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (3, 640, 680)
    return image, torch.stack([image[:, :, :640], image[:, :, :640].flip(-1)])


@pytest.mark.parametrize("kind", KINDS)
def test_official_proposals_embeddings_and_scores(official, models, kind):
    tensors, meta = official
    model = models[kind]
    assert model.config.preset == kind
    assert model.config.feature_last_layer == (9 if kind == "san" else 18)
    image, _ = inputs(official)
    with torch.no_grad():
        feats = model.encode(image[None])
        for n in (9, 15):
            classes = json.loads(meta["classes"])[:n]
            assert_matches(feats.mask_logits[-1][..., ::2, ::2], tensors[f"{kind}.eval.{n}.masks"])
            assert_matches(feats.mask_embeddings[-1], tensors[f"{kind}.eval.{n}.embeddings"])
            weights = model.classifier(classes) / model.classifier.logit_scale.exp()
            assert_matches(weights, tensors[f"{kind}.eval.{n}.classifier"])
            scores = model.scores(feats, classes, size=(480, 510))[0]
            assert_matches(scores[:, ::8, ::8], tensors[f"{kind}.eval.{n}.scores"])


def test_official_training_loss_and_assignment(official, models):
    tensors, meta = official
    model = models["san"].train()
    _, images = inputs(official)
    classes = json.loads(meta["classes"])[:9]
    criterion = MaskClassificationLoss(model.config)
    assignments = []
    criterion.set_criterion.matcher.register_forward_hook(lambda m, a, out: assignments.append(out))
    output = model.forward_train(images, classes)
    generator = torch.Generator().manual_seed(int(meta["seed"]))
    losses = criterion(output, tensors["targets"].long(), generator=generator)
    model.eval()
    weights = criterion.set_criterion.weight_dict(len(output.layers))
    official_parts = {k.removeprefix("train."): v for k, v in tensors.items() if k.startswith("train.loss")}
    assert set(official_parts) == set(weights)
    for name, value in official_parts.items():
        assert_matches((weights[name] * losses[name]).reshape(1), value)
    total = sum(official_parts.values())
    assert_matches(losses["loss"].reshape(1), total)
    for call, indices in enumerate(assignments):
        for b, (rows, cols) in enumerate(indices):
            assert torch.equal(torch.stack([rows, cols]), tensors[f"train.assignment.{call}.{b}"])
    assert len(assignments) == 2
