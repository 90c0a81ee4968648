"""Shipped backbone configs, the offline CLIP tokenizer, and conversion of original checkpoint formats.

Checkpoints come from ``tests/helpers/original_formats.py`` (original key layouts, random tensors). Converted
models are checked tensor by tensor and against plain-torch reference forwards of the original architectures.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel, Sam2Model, Sam3Model, SamModel

from aeroseg.convert.arch import ARCH_DIR, ARCHITECTURES, load_arch_config
from aeroseg.convert.clip import _infer_config as infer_clip_config
from aeroseg.convert.clip import load_original_clip
from aeroseg.convert.sam import _infer_config as infer_sam_config
from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.errors import CheckpointError, UserError
from tests.helpers import original_formats as orig
from tests.helpers.reference_models import check_coverage, openai_encode_image, openai_encode_text, same

# parameter counts of the transformers models (SAM / SAM2: image encoder only), known from the hub models
PARAMS = {
    "clip-vit-b-16": 149_620_737,
    "clip-vit-l-14": 427_616_513,
    "clip-vit-l-14-336": 427_944_193,
    "sam-vit-b": 89_670_912,
    "sam-vit-l": 308_278_272,
    "sam-vit-h": 637_026_048,
    "sam2-hiera-b+": 69_106_816,
    "sam2.1-hiera-b+": 69_106_816,
    "sam3": 454_038_784,  # vision encoder (ViT + FPN) of transformers' Sam3Config defaults (facebook/sam3)
}


# -------------------------------------------------------------------------------------- architectures
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_arch_config_parameter_count(name):
    config = load_arch_config(name)
    model_cls = {"clip": CLIPModel, "sam": SamModel, "sam2": Sam2Model, "sam3": Sam3Model}[config.model_type]
    with torch.device("meta"):
        model = model_cls(config)
    counted = model if config.model_type == "clip" else model.vision_encoder
    assert sum(p.numel() for p in counted.parameters()) == PARAMS[name]


def test_arch_names_match_files_and_unknown_name_is_user_error():
    assert sorted(p.stem for p in ARCH_DIR.glob("*.json")) == sorted(ARCHITECTURES)
    with pytest.raises(UserError, match="unknown backbone architecture"):
        load_arch_config("clip-vit-q-99")


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("clip-vit-b-16", dict(width=768, layers=12, patch=16, image=224, text_width=512, embed=512)),
        ("clip-vit-l-14", dict(width=1024, layers=24, patch=14, image=224, text_width=768, embed=768)),
        ("clip-vit-l-14-336", dict(width=1024, layers=24, patch=14, image=336, text_width=768, embed=768)),
    ],
)
def test_full_size_clip_layout_infers_shipped_config(name, shape):
    state = orig.openai_clip_state_dict(**shape, text_layers=12, context=77, vocab=49408, device="meta")
    inferred, shipped = (
        infer_clip_config(state, Path("x.pt"), "quick_gelu").to_dict(),
        load_arch_config(name).to_dict(),
    )
    for tower in ("vision_config", "text_config"):
        assert {k: inferred[tower][k] for k in shipped[tower]} == shipped[tower]


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("sam-vit-b", dict(width=768, depth=12, heads=12, global_attn=(2, 5, 8, 11))),
        ("sam-vit-l", dict(width=1024, depth=24, heads=16, global_attn=(5, 11, 17, 23))),
        ("sam-vit-h", dict(width=1280, depth=32, heads=16, global_attn=(7, 15, 23, 31))),
    ],
)
def test_full_size_sam_layout_infers_shipped_config(name, shape):
    full = dict(window=14, image=1024, patch=16, dim=256, mask_chans=16, decoder_mlp=2048, iou_hidden=256)
    state = orig.segment_anything_state_dict(**shape, **full, device="meta")
    inferred, shipped = infer_sam_config(state, Path("x.pth")).to_dict(), load_arch_config(name).to_dict()
    for part in ("vision_config", "prompt_encoder_config", "mask_decoder_config"):
        assert inferred[part] == shipped[part]


# ------------------------------------------------------------------------------------------ tokenizer
def test_clip_tokenizer_matches_openai_ids():
    tok = clip_tokenizer()
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    # ids from OpenAI's simple_tokenizer.py with the same vocabulary
    assert tok("A satellite image of a ROAD, with buildings & trees!").input_ids == [
        49406, 320, 10316, 2867, 539, 320, 1759, 267, 593, 8866, 261, 4682, 256, 49407,
    ]  # fmt: skip
    assert tok("it's a bare-soil field in 2024").input_ids == [
        49406, 585, 568, 320, 14318, 268, 9216, 1570, 530, 273, 271, 273, 275, 49407,
    ]  # fmt: skip
    batch = tok(["rangeland", "a"], padding="max_length", max_length=8, return_tensors="pt").input_ids
    assert batch.tolist() == [
        [49406, 4043, 6275, 49407, 49407, 49407, 49407, 49407],
        [49406, 320] + [49407] * 6,
    ]


# ----------------------------------------------------------------------------------------------- CLIP
@pytest.mark.parametrize(
    "fmt, name, hidden_act, act",
    [
        ("torchscript", "ViT-B-16.pt", "auto", "quick_gelu"),  # OpenAI: QuickGELU
        ("torchscript", "ViT-B-16.pt", "gelu", "gelu"),  # the config field overrides the file
        ("open_clip_training", "epoch_32.pt", "auto", "gelu"),  # open_clip's default model configs: GELU
        ("open_clip_training", "ViT-B-16-quickgelu_epoch_32.pt", "auto", "quick_gelu"),  # the name says so
        ("safetensors", "open_clip_model.safetensors", "auto", "gelu"),
        ("open_clip_config", "open_clip_pytorch_model.bin", "auto", "quick_gelu"),  # its config says so
    ],
)
def test_clip_conversion_matches_original(tmp_path, fmt, name, hidden_act, act):
    sd = orig.openai_clip_state_dict()  # width 64, 2 layers, patch 8, image 32, context 16, vocab 100
    path = tmp_path / name
    if fmt == "torchscript":
        orig.save_openai_torchscript(sd, path, image=32, context=16)
        sd = {k: v.half().float() if v.dim() else v for k, v in sd.items()}  # OpenAI archives are fp16
    elif fmt == "safetensors":
        orig.save_safetensors(sd, path)
    else:
        orig.save_open_clip_training(sd, path)
    if fmt == "open_clip_config":
        (tmp_path / "open_clip_config.json").write_text(
            '{"model_cfg": {"embed_dim": 32, "quick_gelu": true}}'
        )
    model = load_original_clip(path, hidden_act=hidden_act)
    assert model.config.vision_config.hidden_act == model.config.text_config.hidden_act == act
    hf = model.state_dict()
    w = 64
    same(hf["visual_projection.weight"], sd["visual.proj"].T)
    same(hf["text_projection.weight"], sd["text_projection"].T)
    block = "vision_model.encoder.layers.1.self_attn"
    in_proj = sd["visual.transformer.resblocks.1.attn.in_proj_weight"]
    for i, name in enumerate("qkv"):
        same(hf[f"{block}.{name}_proj.weight"], in_proj[i * w : (i + 1) * w])
    same(hf["text_model.encoder.layers.0.mlp.fc2.bias"], sd["transformer.resblocks.0.mlp.c_proj.bias"])
    same(hf["vision_model.pre_layrnorm.weight"], sd["visual.ln_pre.weight"])
    assert model.logit_scale.item() == pytest.approx(sd["logit_scale"].item(), rel=1e-3)
    in_projs = [
        c
        for k, v in sd.items()
        if k.endswith("in_proj_weight") or k.endswith("in_proj_bias")
        for c in v.chunk(3)
    ]
    check_coverage(model, sd, list(sd.values()) + in_projs)

    images = torch.randn(2, 3, 32, 32)
    tokens = torch.tensor([[98, 5, 17, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [98, 42, 99] + [0] * 13])
    hf_tokens = torch.where(
        torch.arange(16) > tokens.argmax(-1, keepdim=True), 99, tokens
    )  # HF pads with EOT
    with torch.no_grad():
        out = model(input_ids=hf_tokens, pixel_values=images)
        ref_image, ref_text = openai_encode_image(sd, images, act), openai_encode_text(sd, tokens, act)
    torch.testing.assert_close(
        model.get_image_features(images).pooler_output.detach(), ref_image, atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        model.get_text_features(hf_tokens).pooler_output.detach(), ref_text, atol=1e-5, rtol=1e-4
    )
    ref_logits = sd["logit_scale"].exp() * F.normalize(ref_image, dim=-1) @ F.normalize(ref_text, dim=-1).T
    torch.testing.assert_close(out.logits_per_image, ref_logits, atol=1e-4, rtol=1e-4)


def test_clip_errors_are_one_line(tmp_path):
    sd = orig.openai_clip_state_dict()
    cases = {
        "resnet.pt": {"visual.layer1.0.conv1.weight": torch.zeros(4, 4, 1, 1), **sd},
        "extra.pt": {**sd, "visual.transformer.resblocks.0.ls_1.gamma": torch.ones(64)},
        "missing.pt": {k: v for k, v in sd.items() if k != "text_projection"},
    }
    del cases["resnet.pt"]["visual.conv1.weight"]
    for name, state in cases.items():
        torch.save(state, tmp_path / name)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    expected = {
        "resnet.pt": "ResNet CLIP",
        "extra.pt": "unexpected tensors",
        "missing.pt": "missing tensor 'text_projection'",
        "garbage.pt": "cannot read it",
        "absent.pt": "no such file",
    }
    for name, message in expected.items():
        with pytest.raises(CheckpointError, match=message) as info:
            load_original_clip(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)
    with pytest.raises(UserError, match="hidden_act"):
        load_original_clip(tmp_path / "extra.pt", hidden_act="relu")
