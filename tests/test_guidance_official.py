"""Our SAM ViT and SAM2 Hiera forwards against the official image encoders (segment-anything, facebookresearch/sam2),
run by ``tests/fixtures/make_guidance_fixture.py`` on weights hashed from their key names: the weights are
rebuilt here, written into original checkpoint files and loaded through aeroseg's converters."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from aeroseg.convert.sam import load_original_sam
from aeroseg.convert.sam2 import load_original_sam2
from aeroseg.encoders.hiera_image_encoder import hiera_fpn_forward
from aeroseg.encoders.sam_image_encoder import sam_vit_forward
from tests.helpers import original_formats as orig
from tests.helpers.hashed_weights import hashed_tensor
from tests.test_convert_sam import _tiny_sam2_config

FIXTURE = Path(__file__).parent / "fixtures" / "guidance_official.safetensors"


def _fixture() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(FIXTURE), "pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}, f.metadata()


def _official_weights(
    metadata: dict[str, str], name: str, fake: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The fake checkpoint's other parts with the official image encoder's hashed weights, same keys."""
    shapes = json.loads(metadata[f"{name}_key_shapes"])
    encoder_keys = {k for k in fake if k.startswith("image_encoder.")}
    assert encoder_keys == set(shapes)  # the tests' fake layout is the official one
    assert all(list(fake[k].shape) == shapes[k] for k in shapes)
    return {**fake, **{key: hashed_tensor(key, shape) for key, shape in shapes.items()}}


def _close(ours: torch.Tensor, official: torch.Tensor) -> None:
    assert ours.shape == official.shape
    assert (ours - official).abs().max() <= 1e-5 * official.abs().max()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("grad", [False, True], ids=["lean", "autograd"])
def test_sam_vit_matches_segment_anything(attention, grad, tmp_path):
    tensors, metadata = _fixture()
    torch.save(
        _official_weights(metadata, "sam", orig.segment_anything_state_dict()), tmp_path / "sam_vit_t.pth"
    )
    encoder = load_original_sam(tmp_path / "sam_vit_t.pth").vision_encoder
    with torch.set_grad_enabled(grad):
        ours = encoder.neck(sam_vit_forward(encoder, tensors["sam_images"], taps=(), attention=attention)[0])
    _close(ours.detach(), tensors["sam_neck"])


@pytest.mark.parametrize("grad", [False, True], ids=["lean", "autograd"])
def test_hiera_matches_sam2(grad, tmp_path):
    tensors, metadata = _fixture()
    checkpoint = orig.sam2_checkpoint()
    checkpoint["model"] = _official_weights(metadata, "sam2", checkpoint["model"])
    torch.save(checkpoint, tmp_path / "sam2.1_hiera_t.pt")
    encoder = load_original_sam2(tmp_path / "sam2.1_hiera_t.pt", config=_tiny_sam2_config()).vision_encoder
    with torch.set_grad_enabled(grad):
        ours = hiera_fpn_forward(encoder, tensors["sam2_images"])
    for i, level in enumerate(ours):
        _close(level.detach(), tensors[f"sam2_fpn_{i}"])
