"""Our SAM ViT and SAM2 Hiera forwards against transformers' modules and the original-checkpoint references."""

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention
from transformers import Sam2Model, SamModel
from transformers.models.sam.configuration_sam import SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionEncoder

from aeroseg._tiny import tiny_sam2_config
from aeroseg.config import AerOSegConfig
from aeroseg.convert.sam import load_original_sam
from aeroseg.convert.sam2 import load_original_sam2
from aeroseg.encoders import sam_image_encoder
from aeroseg.encoders.attention_windows import padded_rows, window_index
from aeroseg.encoders.hiera_image_encoder import hiera_fpn_forward
from aeroseg.encoders.sam_image_encoder import ATTENTION_PATHS, sam_vit_forward
from aeroseg.modeling.guidance_encoder import SamGuidanceEncoder
from tests.helpers import original_formats as orig
from tests.helpers.reference_models import sam2_image_encoder as _sam2_image_encoder
from tests.helpers.reference_models import sam_image_encoder as _sam_image_encoder
from tests.test_convert_sam import HIERA, _tiny_sam2_config

# 8×8 grid, window 3 (padded to 9), global blocks 1 and 3; rel-pos tables made non-zero below
SAM_VISION = dict(
    hidden_size=32, num_hidden_layers=4, num_attention_heads=2, image_size=64, patch_size=8, output_channels=16,
    global_attn_indexes=[1, 3], window_size=3, mlp_dim=64,
)  # fmt: skip


def _close(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """Within 1e-5 of the reference's largest magnitude (the issue's bound)."""
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()


def _sam_encoder(attn_implementation: str = "sdpa") -> SamVisionEncoder:
    torch.manual_seed(0)
    encoder = SamVisionEncoder._from_config(
        SamVisionConfig(**SAM_VISION), attn_implementation=attn_implementation
    )
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.normal_(0.0, 0.3)
    return encoder.eval()


def _check_sam(encoder: SamVisionEncoder, attention: str, pixels: torch.Tensor) -> None:
    with torch.no_grad():
        reference = encoder(pixels, output_hidden_states=True)
        last, taken = sam_vit_forward(encoder, pixels, taps=(2, 3), attention=attention)
        _close(encoder.neck(last), reference.last_hidden_state)
    _close(taken[0], reference.hidden_states[2])
    _close(taken[1], reference.hidden_states[3])


@pytest.mark.parametrize("attention", ATTENTION_PATHS)
@pytest.mark.parametrize("reference", ["sdpa", "eager"])
def test_sam_vit_matches_transformers(attention, reference, monkeypatch):
    # flex: the score modification run by flex_attention's own unfused implementation; compiling its kernel
    # takes minutes on the CI's two cores (benchmarks/bench_guidance.py --attention flex runs it compiled)
    monkeypatch.setattr(sam_image_encoder, "_compiled_flex", lambda: flex_attention)
    _check_sam(_sam_encoder(reference), attention, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_sam_vit_query_blocks_cover_global_attention(attention, monkeypatch):
    # 20 scores per call: windows one by one, and global attention (64 tokens) in blocks of 1 query per head
    monkeypatch.setattr(sam_image_encoder, "BLOCK_SCORES", 20)
    _check_sam(_sam_encoder(), attention, torch.randn(2, 3, 64, 64))
    monkeypatch.setattr(sam_image_encoder, "BLOCK_SCORES", 64 * 5)  # 5 queries: the last block is ragged
    _check_sam(_sam_encoder(), attention, torch.randn(1, 3, 64, 64))


def test_sam_vit_matches_the_original_checkpoint_reference(tmp_path):
    sd = orig.segment_anything_state_dict()  # ViT width 32, 3 blocks, window 3 on 8×8 (padded to 9), 1 global
    torch.save(sd, tmp_path / "sam_vit_tiny.pth")
    encoder = load_original_sam(tmp_path / "sam_vit_tiny.pth").vision_encoder
    images = torch.randn(2, 3, 64, 64)
    reference = _sam_image_encoder(sd, images, heads=2, window=3, global_attn=(1,))
    for attention in ("sdpa", "eager"):
        with torch.no_grad():
            ours = encoder.neck(sam_vit_forward(encoder, images, taps=(), attention=attention)[0])
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


def test_sam_guidance_gradients_match_transformers():
    encoder = _sam_encoder()
    pixels = torch.randn(1, 3, 64, 64)
    encoder.zero_grad()
    sam_vit_forward(encoder, pixels, taps=(), attention="sdpa")[0].square().sum().backward()
    ours = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    encoder.zero_grad()
    outputs = encoder(pixels, output_hidden_states=True)
    outputs.hidden_states[-1].square().sum().backward()
    reference = {n: p.grad for n, p in encoder.named_parameters() if p.grad is not None}
    assert (
        ours.keys() == reference.keys() and "layers.1.attn.rel_pos_h" in ours
    )  # the neck has none in either
    for name, grad in ours.items():
        _close(grad, reference[name])


def test_sam_guidance_encoder_rejects_an_unknown_attention():
    with pytest.raises(ValueError, match="guidance_attention"):
        SamGuidanceEncoder(_sam_encoder(), image_size=64, layers=(1, 2), attention="fast")
    with pytest.raises(ValueError, match="guidance_attention"):
        AerOSegConfig(guidance_attention="fast")


@pytest.mark.parametrize("config", [tiny_sam2_config, _tiny_sam2_config], ids=["tiny", "global-and-padding"])
def test_hiera_matches_transformers(config):
    torch.manual_seed(0)
    encoder = Sam2Model._from_config(config(), attn_implementation="sdpa").vision_encoder.eval()
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.normal_(0.0, 0.2)
        pixels = torch.randn(2, 3, 64, 64)
        reference = encoder(pixels).fpn_hidden_states
        ours = hiera_fpn_forward(encoder, pixels)
    assert len(ours) == len(reference) == 3
    for got, want in zip(ours, reference, strict=True):
        _close(got, want)


def test_hiera_matches_the_original_checkpoint_reference(tmp_path):
    ckpt = orig.sam2_checkpoint()  # Hiera dims 8..64, stages (1, 2, 3, 1), 64×64 images, FPN 16 channels
    torch.save(ckpt, tmp_path / "sam2.1_hiera_tiny.pt")
    encoder = load_original_sam2(tmp_path / "sam2.1_hiera_tiny.pt", config=_tiny_sam2_config()).vision_encoder
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = hiera_fpn_forward(encoder, images)
    for got, want in zip(ours, _sam2_image_encoder(ckpt["model"], images, **HIERA), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("b", "h", "w", "ws"), [(1, 4, 4, 2), (2, 5, 7, 3), (1, 3, 3, 4)])
def test_window_index_round_trip(b, h, w, ws):
    x = torch.randn(b, h, w, 2)
    gather, scatter = window_index(b, h, w, ws, x.device)
    windows = padded_rows(x).index_select(0, gather).view(-1, ws, ws, 2)
    nh, nw = -(-h // ws), -(-w // ws)
    padded = torch.nn.functional.pad(x, (0, 0, 0, nw * ws - w, 0, nh * ws - h))
    expected = padded.view(b, nh, ws, nw, ws, 2).transpose(2, 3).reshape(-1, ws, ws, 2)
    torch.testing.assert_close(windows, expected, rtol=0, atol=0)
    torch.testing.assert_close(windows.reshape(-1, 2).index_select(0, scatter).view_as(x), x, rtol=0, atol=0)


def test_guidance_encoders_run_our_forward(tiny_backbones, monkeypatch):
    calls = []
    for module, name in [("guidance_encoder", "sam_vit_forward"), ("guidance_encoder", "hiera_fpn_forward")]:
        target = getattr(__import__(f"aeroseg.modeling.{module}", fromlist=[name]), name)
        monkeypatch.setattr(
            f"aeroseg.modeling.{module}.{name}",
            lambda *a, _f=target, _n=name, **k: calls.append(_n) or _f(*a, **k),
        )
    from aeroseg.modeling.guidance_encoder import Sam2GuidanceEncoder

    sam = SamModel.from_pretrained(tiny_backbones["sam"]).vision_encoder
    sam2 = Sam2Model.from_pretrained(tiny_backbones["sam2"]).vision_encoder
    with torch.no_grad():
        SamGuidanceEncoder(sam, image_size=64, layers=(2, 3))(torch.rand(1, 3, 64, 64), grid=4)
        Sam2GuidanceEncoder(sam2, image_size=64)(torch.rand(1, 3, 64, 64), grid=4)
    assert calls == ["sam_vit_forward", "hiera_fpn_forward"]
