"""SimFeatUp's upsampling as per-tile matrix products: equal (1e-5 relative) to the shifted multiply-adds it
replaced, saved by ``tests/fixtures/make_simfeatup_reference.py``; blocks of any size; one channel and many."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from aeroseg.training_free import simfeatup
from aeroseg.training_free.simfeatup import SimFeatUp, resize_matrix

REFERENCE = Path(__file__).parent / "fixtures" / "simfeatup_reference.safetensors"
KINDS = ["jbu_one", "jbu_stack"]


@pytest.fixture(scope="module")
def reference():
    return load_file(str(REFERENCE))


def model_and_inputs(reference, kind):
    state = {
        k.removeprefix(f"{kind}.state."): v for k, v in reference.items() if k.startswith(f"{kind}.state.")
    }
    model = SimFeatUp(6, kind).eval()
    model.load_state_dict(state)
    return model, {
        k.removeprefix(f"{kind}."): v for k, v in reference.items() if not k.startswith(f"{kind}.s")
    }


def assert_close(actual, expected):
    """Within 1e-5 of the reference's scale (its entries near 0 make an entry-wise ratio meaningless)."""
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("block", [simfeatup.BLOCK, 1, 3000])  # one block; one tile row each; ragged
def test_equals_the_reference(reference, kind, block, monkeypatch):
    monkeypatch.setattr(simfeatup, "BLOCK", block)
    model, tensors = model_and_inputs(reference, kind)
    with torch.no_grad():
        kernels = model.kernels(tensors["image"], tensors["features"].shape[-2:])
        assert_close(model(tensors["features"], tensors["image"]), tensors["forward"])
        assert_close(model.upsample(tensors["one"], kernels), tensors["upsample_one"])
        assert_close(model.upsample(tensors["many"], kernels), tensors["upsample_many"])
    # 3×5 → 6×10 → … → 48×80: the first steps' outputs are smaller than a tile, the others not square
    assert [k.matrices.shape[1:3] for k in kernels] == [(1, 2), (2, 3), (3, 5), (6, 10)]


def test_blocks_do_not_change_a_channel(reference, monkeypatch):
    model, tensors = model_and_inputs(reference, "jbu_one")
    many = tensors["many"]
    with torch.no_grad():
        kernels = model.kernels(tensors["image"], many.shape[-2:])
        monkeypatch.setattr(simfeatup, "BLOCK", 5000)  # 4 channels and 1 channel: blocks of other sizes
        together = model.upsample(many, kernels)
        alone = torch.cat([model.upsample(many[:, i : i + 1], kernels) for i in range(4)], 1)
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("size_in", "size_out"), [(3, 6), (5, 16), (7, 3), (1, 4)])
def test_resize_matrix_is_bicubic(size_in, size_out):
    x = torch.randn(2, 4, size_in, size_in + 2)
    rows, cols = resize_matrix(size_in, size_out), resize_matrix(size_in + 2, size_out + 1)
    expected = F.interpolate(x, size=(size_out, size_out + 1), mode="bicubic", align_corners=False)
    torch.testing.assert_close(rows @ x @ cols.T, expected, rtol=1e-5, atol=1e-6)


def test_a_step_resizes_to_any_guide(reference):
    """A step (bicubic to the guide's size, then the kernel) at a non-×2 ratio: its matrices equal its
    kernel applied as shifted multiply-adds to the bicubic resize, written out here."""
    model, _ = model_and_inputs(reference, "jbu_stack")
    step, r = model.steps[1], model.steps[1].radius
    source, guide = torch.randn(1, 3, 5, 4), torch.randn(1, 3, 13, 11)
    with torch.no_grad():
        kernel = step.kernel(guide).permute(0, 3, 1, 2)  # (B, K, H, W)
        up = F.pad(F.interpolate(source, size=(13, 11), mode="bicubic"), [r] * 4, mode="reflect")
        d = 2 * r + 1
        expected = sum(
            kernel[:, k : k + 1] * up[:, :, k // d : k // d + 13, k % d : k % d + 11] for k in range(d * d)
        )
        torch.testing.assert_close(step(source, guide), expected, rtol=1e-5, atol=1e-5)
