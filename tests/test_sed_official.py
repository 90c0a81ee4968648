"""SED checkpoints run in aeroseg with the official code's outputs.

``fixtures/sed_official.safetensors`` was made by ``fixtures/make_sed_fixture.py``, which runs the official
SED code (xb534/SED, its open_clip copy, timm 0.8.3) on a tiny ConvNeXt CLIP and the released decoder widths,
every tensor a hash of its key. Here the same checkpoint is rebuilt in SED's ``{"model": ...}`` layout, loaded
through :func:`aeroseg.convert.sed.load_sed` and run as the official code ran: training mode on two 384²
images (the four outputs and the four losses on fixed masks), eval mode on 320×480 images with category early
rejection off and on (top 1 and top 2), with 9 and 15 classes.
"""

import pytest
import torch

from aeroseg.convert.sed import load_sed
from aeroseg.sed import SEDLoss
from aeroseg.sed.criterion import PARTS
from tests.helpers.sed_fixture import (
    assert_matches,
    classes,
    clip_size,
    eval_image,
    official,
    train_batch,
    write_checkpoint,
)

CASES = [("eval", "all"), ("blocks", "all"), ("blocks", "reject1"), ("blocks", "reject2")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("sed") / "model_final.pth")


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_sed(checkpoint, clip_image_size=clip_size())


@pytest.mark.parametrize("n", [9, 15])
def test_training_outputs_and_loss_match_the_official_code(model, n):
    tensors, _ = official()
    images, masks = train_batch()
    model.train()
    torch.manual_seed(0)
    output = model.forward_train(images, classes(n))
    assert_matches(output.logits.detach()[..., ::2, ::2], tensors[f"train.{n}.final"])
    for i, scores in enumerate(output.rejection):
        assert_matches(scores.detach()[..., :: 2**i, :: 2**i], tensors[f"train.{n}.aux{i}"])
    losses = SEDLoss(model.config)(output, masks)
    official_losses = tensors[f"train.{n}.losses"]
    for name, theirs in zip(PARTS, official_losses, strict=True):
        torch.testing.assert_close(losses[name].detach(), theirs, rtol=1e-5, atol=0)
    torch.testing.assert_close(losses["loss"].detach(), official_losses.sum(), rtol=1e-5, atol=0)
    losses["loss"].backward()  # the loss reaches the image tower, not the text tower
    assert model.encoder.trunk.embeddings.patch_embeddings.weight.grad is not None
    assert all(p.grad is None for p in model.text_encoder.parameters())
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("n", [9, 15])
@pytest.mark.parametrize(("image", "mode"), CASES)
def test_eval_probabilities_match_the_official_code(model, n, image, mode):
    tensors, _ = official()
    rejecting = mode != "all"
    model.config = model.config.replace(
        early_rejection=rejecting, early_rejection_topk=int(mode[-1]) if rejecting else 1
    )
    try:
        model.eval()
        with torch.no_grad():
            feats = model.encode(eval_image(image))
            probs = model.probabilities(feats, classes(n))  # (1, T, 320, 480)
            logits = model._decode(feats, classes(n))  # (1, T, 96, 96), the head's output
    finally:
        model.config = model.config.replace(early_rejection=False, early_rejection_topk=1)
    theirs = tensors[f"{image}.{n}.{mode}.sem_seg"]
    assert_matches(probs[0][:, ::8, ::8], theirs)
    head = tensors[f"{image}.{n}.{mode}.head"]  # logits, or with rejection the probabilities (0 if rejected)
    assert_matches((logits.sigmoid() if rejecting else logits)[..., ::2, ::2], head)
    rejected = (theirs.flatten(1).amax(1) == 0).sum().item()
    assert (probs[0].flatten(1).amax(1) == 0).sum().item() == rejected
    assert (rejected > 0) == rejecting  # the fixture exercises the rejection


def test_the_mlp_visual_head_matches_the_official_code(tmp_path):
    """``convnext_large_d_320``'s head (linear, GELU, dropout, linear) in eval mode."""
    tensors, _ = official()
    model = load_sed(write_checkpoint(tmp_path / "large.pth", "mlp"), clip_image_size=clip_size())
    assert model.clip_arch["head"] == "mlp"
    with torch.no_grad():
        feats = model.encode(eval_image("eval"))
        assert_matches(model._decode(feats, classes(15))[..., ::2, ::2], tensors["mlp.eval.15.all.head"])
        assert_matches(
            model.probabilities(feats, classes(15))[0][:, ::8, ::8], tensors["mlp.eval.15.all.sem_seg"]
        )


def test_the_fixture_names_its_upstream_commit():
    assert official()[1]["commit"] == "db20d93c0ec8b0ce7fae267a10f826dfc7da15f5"
