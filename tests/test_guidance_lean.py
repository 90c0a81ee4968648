"""The memory-lean forms of the guidance encoders' blocks (no autograd, no autocast): blocks of MLP rows and of
windows, in-place residuals — against transformers, against our own plain forms, and
what they must not do (change their input, hide FLOPs from the counter, break autocast)."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from transformers import Sam2Model
from transformers.models.sam.configuration_sam import SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionEncoder

from aeroseg._tiny import tiny_sam2_config
from aeroseg.encoders import hiera_image_encoder, residual, sam_image_encoder
from aeroseg.encoders.attention_windows import window_index
from aeroseg.encoders.hiera_image_encoder import hiera_block, hiera_fpn_forward
from aeroseg.encoders.sam_image_encoder import sam_vit_forward, vit_block
from aeroseg.measure import FLOP_MAPPING
from aeroseg.training_free.regions import SamFeatures
from tests.test_convert_sam import _tiny_sam2_config
from tests.test_guidance_encoders import SAM_VISION, _check_sam, _close, _sam_encoder


def _hiera_encoder(config=_tiny_sam2_config):
    torch.manual_seed(0)
    encoder = Sam2Model._from_config(config(), attn_implementation="sdpa").vision_encoder.eval()
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.normal_(0.0, 0.2)
    return encoder


def _check_hiera(encoder, pixels):
    with torch.no_grad():
        reference = encoder(pixels).fpn_hidden_states
        ours = hiera_fpn_forward(encoder, pixels)
    for got, want in zip(ours, reference, strict=True):
        _close(got, want)


def test_many_small_blocks_of_rows_and_windows_match_transformers(monkeypatch):
    # 7 MLP rows per block (ragged last block), one window per block of windows
    monkeypatch.setattr(residual, "MLP_ROWS", 7)
    monkeypatch.setattr(hiera_image_encoder, "WINDOW_TOKENS", 1)
    _check_sam(_sam_encoder(), "sdpa", torch.randn(2, 3, 64, 64))
    for config in (tiny_sam2_config, _tiny_sam2_config):
        _check_hiera(_hiera_encoder(config), torch.randn(2, 3, 64, 64))


def test_lean_forms_equal_the_plain_forms():
    sam, hiera = _sam_encoder(), _hiera_encoder()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        lean_sam = sam_vit_forward(sam, pixels, taps=(1, 2))
        lean_hiera = hiera_fpn_forward(hiera, pixels)
    plain_sam = sam_vit_forward(sam, pixels, taps=(1, 2))  # autograd records: the out-of-place forms
    plain_hiera = hiera_fpn_forward(hiera, pixels)
    assert plain_sam[0].requires_grad
    lean = [lean_sam[0], *lean_sam[1], *lean_hiera]
    for got, want in zip(lean, [plain_sam[0], *plain_sam[1], *plain_hiera], strict=True):
        _close(got, want.detach())


def test_blocks_leave_their_input_unchanged():
    sam, hiera = _sam_encoder(), _hiera_encoder()
    with torch.no_grad():
        for layer in sam.layers:  # windowed and global
            x = torch.randn(1, 8, 8, SAM_VISION["hidden_size"])
            kept = x.clone()
            vit_block(layer, x, "sdpa")
            assert torch.equal(x, kept)
        x = torch.randn(1, 16, 16, hiera.backbone.blocks[0].dim)
        kept = x.clone()
        hiera_block(hiera.backbone.blocks[0], x)
        assert torch.equal(x, kept)


def test_other_activations_than_gelu_run_out_of_place():
    torch.manual_seed(0)
    encoder = SamVisionEncoder._from_config(SamVisionConfig(**SAM_VISION, hidden_act="relu"))
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.normal_(0.0, 0.3)
    _check_sam(encoder.eval(), "sdpa", torch.randn(1, 3, 64, 64))


def test_autocast_takes_the_plain_forms():
    sam, hiera = _sam_encoder(), _hiera_encoder()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = [sam.neck(sam_vit_forward(sam, pixels, taps=())[0]), *hiera_fpn_forward(hiera, pixels)]
        reference = [sam(pixels).last_hidden_state, *hiera(pixels).fpn_hidden_states]
    for got, want in zip(ours, reference, strict=True):
        assert got.shape == want.shape
        assert (got.float() - want.float()).abs().max() <= 0.05 * want.float().abs().max()  # bf16 rounding


@pytest.mark.parametrize("encoder", ["sam", "hiera"])
def test_the_flop_counter_sees_the_in_place_products(encoder):
    model = _sam_encoder() if encoder == "sam" else _hiera_encoder()
    pixels = torch.randn(1, 3, 64, 64)

    def count() -> int:
        with FlopCounterMode(display=False, custom_mapping=FLOP_MAPPING) as flops:
            if encoder == "sam":
                sam_vit_forward(model, pixels, taps=())
            else:
                hiera_fpn_forward(model, pixels)
        return flops.get_total_flops()

    with torch.no_grad():
        lean = count()
    assert lean == count() > 0  # the second count records autograd: plain forms


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_training_free_sam_features_run_our_forward(kind):
    encoder = _sam_encoder() if kind == "sam" else _hiera_encoder()
    features = SamFeatures(encoder, kind=kind, image_size=64)
    images = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        ours = features(images)
        pixels = (F.interpolate(images, size=(64, 64), mode="bilinear") - features.mean) / features.std
        out = encoder(pixels)
        reference = F.normalize(out.last_hidden_state if kind == "sam" else out.fpn_hidden_states[-1], dim=1)
    _close(ours, reference)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_blocks_of_windows_match_transformers(attention, monkeypatch):
    # window 3 on 8×8 (padded to 9×9: 9 windows an image), 2 heads: 162 scores a window, so 700 puts
    # 4 windows in a kernel call and leaves a ragged last block (4, 4, 1 per image; 4, 4, 4, 4, 2 for two)
    monkeypatch.setattr(sam_image_encoder, "BLOCK_SCORES", 700)
    _check_sam(_sam_encoder(), attention, torch.randn(1, 3, 64, 64))
    _check_sam(_sam_encoder(), attention, torch.randn(2, 3, 64, 64))


def test_indices_cached_in_inference_mode_serve_autograd_later():
    window_index.cache_clear()
    sam, hiera = _sam_encoder(), _hiera_encoder()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        sam_vit_forward(sam, pixels, taps=())
        hiera_fpn_forward(hiera, pixels)
    sam_vit_forward(sam, pixels, taps=())[0].sum().backward()
    hiera_fpn_forward(hiera, pixels)[0].sum().backward()
