"""Shipped backbone configs, the offline CLIP tokenizer, and conversion of original checkpoint formats.

Checkpoints come from ``tests/helpers/original_formats.py`` (original key layouts, random tensors). Converted
models are checked tensor by tensor and against plain-torch reference forwards of the original architectures.
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel, Sam2Config, Sam2Model, Sam3Model, SamModel

from aeroseg.convert.arch import ARCH_DIR, ARCHITECTURES, load_arch_config
from aeroseg.convert.clip import _infer_config as infer_clip_config
from aeroseg.convert.clip import load_original_clip
from aeroseg.convert.sam import _infer_config as infer_sam_config
from aeroseg.convert.sam import load_original_sam
from aeroseg.convert.sam2 import _convert as _convert_sam2
from aeroseg.convert.sam2 import _matching_config as _matching_sam2_config
from aeroseg.convert.sam2 import load_original_sam2
from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.errors import CheckpointError, UserError
from tests.helpers import original_formats as orig

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


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def _fingerprint(t: torch.Tensor) -> tuple[float, ...]:
    """Order-free identity of a tensor's values (a transposed or reshaped copy has the same one)."""
    return tuple(sorted(t.detach().float().flatten().tolist()))


def _check_coverage(model: torch.nn.Module, original: dict, pieces: list[torch.Tensor], duplicated: int = 0):
    """Every converted tensor holds the values of one original tensor (or piece), and all values arrive."""
    known = {_fingerprint(t) for t in pieces}
    state = model.state_dict()
    strays = [k for k, v in state.items() if _fingerprint(v) not in known]
    assert not strays, f"tensors not taken from the checkpoint: {strays[:5]}"
    assert sum(v.numel() for v in state.values()) - duplicated == sum(v.numel() for v in original.values())


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
def _ln(x, sd, p, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps)


def _fc(x, sd, p):
    return F.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])


def _openai_transformer(x, sd, prefix, mask=None):
    """OpenAI CLIP ``Transformer``: pre-LN residual blocks, attention from ``in_proj``, QuickGELU MLP."""
    n, (b, t, w) = 0, x.shape
    heads = w // 64
    while f"{prefix}.resblocks.{n}.ln_1.weight" in sd:
        p = f"{prefix}.resblocks.{n}"
        qkv = F.linear(_ln(x, sd, f"{p}.ln_1"), sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"])
        q, k, v = qkv.chunk(3, -1)
        q, k, v = (z.reshape(b, t, heads, -1).transpose(1, 2) for z in (q, k, v))  # (B, heads, T, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + (0 if mask is None else mask)
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, w)
        x = x + _fc(a, sd, f"{p}.attn.out_proj")
        h = _fc(_ln(x, sd, f"{p}.ln_2"), sd, f"{p}.mlp.c_fc")
        x = x + _fc(h * torch.sigmoid(1.702 * h), sd, f"{p}.mlp.c_proj")  # QuickGELU
        n += 1
    return x


def _openai_encode_image(sd, images):
    patch = sd["visual.conv1.weight"].shape[-1]
    x = F.conv2d(images, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)  # (B, G*G, W)
    x = (
        torch.cat([sd["visual.class_embedding"].expand(len(x), 1, -1), x], 1)
        + sd["visual.positional_embedding"]
    )
    x = _openai_transformer(_ln(x, sd, "visual.ln_pre"), sd, "visual.transformer")
    return _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def _openai_encode_text(sd, tokens):
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"]
    mask = torch.full((tokens.shape[1],) * 2, float("-inf")).triu(1)
    x = _ln(_openai_transformer(x, sd, "transformer", mask), sd, "ln_final")
    return x[torch.arange(len(x)), tokens.argmax(-1)] @ sd["text_projection"]


@pytest.mark.parametrize("fmt", ["torchscript", "open_clip_training", "safetensors"])
def test_clip_conversion_matches_original(tmp_path, fmt):
    sd = orig.openai_clip_state_dict()  # width 64, 2 layers, patch 8, image 32, context 16, vocab 100
    path = tmp_path / ("model.safetensors" if fmt == "safetensors" else "model.pt")
    if fmt == "torchscript":
        orig.save_openai_torchscript(sd, path, image=32, context=16)
        sd = {k: v.half().float() if v.dim() else v for k, v in sd.items()}  # OpenAI archives are fp16
    elif fmt == "open_clip_training":
        orig.save_open_clip_training(sd, path)
    else:
        orig.save_safetensors(sd, path)
    model = load_original_clip(path)
    hf = model.state_dict()
    w = 64
    _same(hf["visual_projection.weight"], sd["visual.proj"].T)
    _same(hf["text_projection.weight"], sd["text_projection"].T)
    block = "vision_model.encoder.layers.1.self_attn"
    in_proj = sd["visual.transformer.resblocks.1.attn.in_proj_weight"]
    for i, name in enumerate("qkv"):
        _same(hf[f"{block}.{name}_proj.weight"], in_proj[i * w : (i + 1) * w])
    _same(hf["text_model.encoder.layers.0.mlp.fc2.bias"], sd["transformer.resblocks.0.mlp.c_proj.bias"])
    _same(hf["vision_model.pre_layrnorm.weight"], sd["visual.ln_pre.weight"])
    assert model.logit_scale.item() == pytest.approx(sd["logit_scale"].item(), rel=1e-3)
    in_projs = [
        c
        for k, v in sd.items()
        if k.endswith("in_proj_weight") or k.endswith("in_proj_bias")
        for c in v.chunk(3)
    ]
    _check_coverage(model, sd, list(sd.values()) + in_projs)

    images = torch.randn(2, 3, 32, 32)
    tokens = torch.tensor([[98, 5, 17, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [98, 42, 99] + [0] * 13])
    hf_tokens = torch.where(
        torch.arange(16) > tokens.argmax(-1, keepdim=True), 99, tokens
    )  # HF pads with EOT
    with torch.no_grad():
        out = model(input_ids=hf_tokens, pixel_values=images)
        ref_image, ref_text = _openai_encode_image(sd, images), _openai_encode_text(sd, tokens)
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


# ------------------------------------------------------------------------------------------------ SAM
def _ln2d(x, sd, p):
    """segment-anything ``LayerNorm2d``: normalise over channels of B×C×H×W, eps 1e-6."""
    u = x.mean(1, keepdim=True)
    x = (x - u) / torch.sqrt((x - u).pow(2).mean(1, keepdim=True) + 1e-6)
    return sd[f"{p}.weight"][:, None, None] * x + sd[f"{p}.bias"][:, None, None]


def _partition(x, ws):
    """B×H×W×C -> (B·nW)×ws×ws×C windows, zero-padding H, W up to multiples of ws."""
    b, h, w, c = x.shape
    x = F.pad(x, (0, 0, 0, (-w) % ws, 0, (-h) % ws))
    hp, wp = x.shape[1:3]
    return x.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c), (hp, wp)


def _unpartition(x, ws, padded, size):
    hp, wp = padded
    b = x.shape[0] // (hp * wp // ws // ws)
    x = x.view(b, hp // ws, wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, : size[0], : size[1]]


def _sam_attention(x, sd, p, heads):
    """segment-anything ``Attention``, decomposed relative positions (tables already at the right size)."""
    b, h, w, _ = x.shape
    q, k, v = _fc(x, sd, f"{p}.qkv").reshape(b, h * w, 3, heads, -1).unbind(2)
    q, k, v = (z.transpose(1, 2).reshape(b * heads, h * w, -1) for z in (q, k, v))  # (B·heads, HW, d)
    d = q.shape[-1]
    rel_h = sd[f"{p}.rel_pos_h"][torch.arange(h)[:, None] - torch.arange(h)[None, :] + h - 1]  # (H, H, d)
    rel_w = sd[f"{p}.rel_pos_w"][torch.arange(w)[:, None] - torch.arange(w)[None, :] + w - 1]  # (W, W, d)
    r_q = q.reshape(b * heads, h, w, d)
    bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h)[:, :, :, :, None]
    bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w)[:, :, :, None, :]
    attn = ((q * d**-0.5) @ k.transpose(-2, -1)).view(b * heads, h, w, h, w) + bias_h + bias_w
    x = (attn.view(b * heads, h * w, h * w).softmax(-1) @ v).view(b, heads, h, w, d)
    return _fc(x.permute(0, 2, 3, 1, 4).reshape(b, h, w, -1), sd, f"{p}.proj")


def _sam_image_encoder(sd, images, *, heads, window, global_attn):
    """segment-anything ``ImageEncoderViT.forward``: B×3×H×W -> B×C×H/16×W/16 (here /8)."""
    e = "image_encoder"
    x = F.conv2d(images, sd[f"{e}.patch_embed.proj.weight"], sd[f"{e}.patch_embed.proj.bias"], stride=8)
    x = x.permute(0, 2, 3, 1) + sd[f"{e}.pos_embed"]  # (B, G, G, C)
    i = 0
    while f"{e}.blocks.{i}.norm1.weight" in sd:
        p, ws = f"{e}.blocks.{i}", 0 if i in global_attn else window
        shortcut, x = x, _ln(x, sd, f"{p}.norm1", 1e-6)
        size = x.shape[1:3]
        if ws:
            x, padded = _partition(x, ws)
        x = _sam_attention(x, sd, f"{p}.attn", heads)
        x = shortcut + (_unpartition(x, ws, padded, size) if ws else x)
        h = F.gelu(_fc(_ln(x, sd, f"{p}.norm2", 1e-6), sd, f"{p}.mlp.lin1"))
        x = x + _fc(h, sd, f"{p}.mlp.lin2")
        i += 1
    x = _ln2d(F.conv2d(x.permute(0, 3, 1, 2), sd[f"{e}.neck.0.weight"]), sd, f"{e}.neck.1")
    return _ln2d(F.conv2d(x, sd[f"{e}.neck.2.weight"], padding=1), sd, f"{e}.neck.3")


def test_sam_conversion_matches_original(tmp_path):
    # ViT width 32, 3 blocks, 2 heads, window 3 on an 8×8 grid (padded to 9), block 1 global
    sd = orig.segment_anything_state_dict()
    torch.save(sd, tmp_path / "sam_vit_tiny.pth")
    model = load_original_sam(tmp_path / "sam_vit_tiny.pth")
    assert (
        model.config.vision_config.global_attn_indexes == [1] and model.config.vision_config.window_size == 3
    )
    hf = model.state_dict()
    pairs = [
        ("vision_encoder.layers.2.attn.rel_pos_w", "image_encoder.blocks.2.attn.rel_pos_w"),
        ("vision_encoder.neck.layer_norm2.bias", "image_encoder.neck.3.bias"),
        ("prompt_encoder.mask_embed.conv3.weight", "prompt_encoder.mask_downscaling.6.weight"),
        (
            "shared_image_embedding.positional_embedding",
            "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        ),
        (
            "mask_decoder.transformer.layers.1.layer_norm4.weight",
            "mask_decoder.transformer.layers.1.norm4.weight",
        ),
        ("mask_decoder.upscale_conv2.weight", "mask_decoder.output_upscaling.3.weight"),
        ("mask_decoder.iou_prediction_head.layers.0.bias", "mask_decoder.iou_prediction_head.layers.1.bias"),
        (
            "mask_decoder.output_hypernetworks_mlps.3.proj_out.weight",
            "mask_decoder.output_hypernetworks_mlps.3.layers.2.weight",
        ),
    ]
    for new, old in pairs:
        _same(hf[new], sd[old])
    weights = {k: v for k, v in sd.items() if k not in ("pixel_mean", "pixel_std")}
    _check_coverage(
        model,
        weights,
        list(weights.values()),
        duplicated=hf["shared_image_embedding.positional_embedding"].numel(),
    )

    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.vision_encoder(images).last_hidden_state
        ref = _sam_image_encoder(sd, images, heads=2, window=3, global_attn=(1,))
        masks = model(
            pixel_values=images, input_points=torch.tensor([[[[10.0, 20.0]]], [[[40.0, 5.0]]]])
        ).pred_masks
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert masks.shape == (2, 1, 3, 32, 32) and torch.isfinite(masks).all()


def test_sam_errors_are_one_line(tmp_path):
    sd = orig.segment_anything_state_dict()
    torch.save({k: v for k, v in sd.items() if k != "image_encoder.pos_embed"}, tmp_path / "no_pos.pth")
    torch.save({**sd, "image_encoder.blocks.0.attn.lora_a": torch.zeros(2, 2)}, tmp_path / "lora.pth")
    torch.save(orig.openai_clip_state_dict(), tmp_path / "clip.pth")
    for name, message in [
        ("no_pos.pth", "missing tensor"),
        ("lora.pth", "unexpected tensors"),
        ("clip.pth", "missing"),
    ]:
        with pytest.raises(CheckpointError, match=message) as info:
            load_original_sam(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)


# ----------------------------------------------------------------------------------------------- SAM2
HIERA = dict(heads=(1, 2, 4, 8), stages=(1, 2, 3, 1), windows=(4, 2, 3, 1), global_blocks=(4,))


def _tiny_sam2_config() -> Sam2Config:
    backbone = dict(
        model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[64, 64],
        blocks_per_stage=list(HIERA["stages"]), embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=list(HIERA["heads"]),
        global_attention_blocks=list(HIERA["global_blocks"]),
        window_size_per_stage=list(HIERA["windows"]), window_positional_embedding_background_size=[3, 3],
    )  # fmt: skip
    vision = dict(
        model_type="sam2_vision_model", backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
        fpn_hidden_size=16, backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
    )  # fmt: skip
    return Sam2Config(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16),
    )


def _hiera_attention(x, sd, p, heads, pool):
    """SAM2 ``MultiScaleAttention``: optional 2×2 max-pooling of the queries."""
    b, h, w, _ = x.shape
    q, k, v = _fc(x, sd, f"{p}.qkv").reshape(b, h * w, 3, heads, -1).unbind(2)
    if pool:
        q = F.max_pool2d(q.reshape(b, h, w, -1).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        h, w = q.shape[1:3]
        q = q.reshape(b, h * w, heads, -1)
    x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return _fc(x.transpose(1, 2).reshape(b, h, w, -1), sd, f"{p}.proj")


def _sam2_image_encoder(sd, images, *, heads, stages, windows, global_blocks):
    """SAM2 ``Hiera`` + ``FpnNeck`` (top-down levels 2, 3; nearest upsampling; scalp 1): three FPN maps."""
    t = "image_encoder.trunk"
    patch = (sd[f"{t}.patch_embed.proj.weight"], sd[f"{t}.patch_embed.proj.bias"])
    x = F.conv2d(images, *patch, stride=4, padding=3)
    h, w = x.shape[2:]
    win = sd[f"{t}.pos_embed_window"]
    pos = F.interpolate(sd[f"{t}.pos_embed"], size=(h, w), mode="bicubic")
    x = (x + pos + win.tile(1, 1, h // win.shape[2], w // win.shape[3])).permute(0, 2, 3, 1)  # (B, H, W, C)
    ends = [sum(stages[: s + 1]) - 1 for s in range(len(stages))]
    feats, stage = [], 0
    for i in range(sum(stages)):
        ws = 0 if i in global_blocks else windows[stage]  # a stage's first block keeps the previous window
        stage += i - 1 in ends
        p, pool = f"{t}.blocks.{i}", i - 1 in ends
        shortcut, x = x, _ln(x, sd, f"{p}.norm1", 1e-6)
        if f"{p}.proj.weight" in sd:
            shortcut = _fc(x, sd, f"{p}.proj")
            shortcut = F.max_pool2d(shortcut.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1) if pool else shortcut
        size = x.shape[1:3]
        if ws:
            x, padded = _partition(x, ws)
        x = _hiera_attention(x, sd, f"{p}.attn", heads[stage], pool)
        if ws and pool:
            ws, size = ws // 2, shortcut.shape[1:3]
            padded = (size[0] + (-size[0]) % ws, size[1] + (-size[1]) % ws)
        x = shortcut + (_unpartition(x, ws, padded, size) if ws else x)
        hid = F.gelu(_fc(_ln(x, sd, f"{p}.norm2", 1e-6), sd, f"{p}.mlp.layers.0"))
        x = x + _fc(hid, sd, f"{p}.mlp.layers.1")
        if i in ends:
            feats.append(x.permute(0, 3, 1, 2))
    n, prev, out = len(feats) - 1, None, [None] * len(feats)
    for i in range(n, -1, -1):
        c = f"image_encoder.neck.convs.{n - i}.conv"
        lateral = F.conv2d(feats[i], sd[f"{c}.weight"], sd[f"{c}.bias"])
        top_down = i in (2, 3) and prev is not None
        prev = out[i] = (
            lateral + F.interpolate(prev, scale_factor=2.0, mode="nearest") if top_down else lateral
        )
    return out[:-1]


def test_sam2_conversion_matches_original(tmp_path):
    ckpt = orig.sam2_checkpoint()  # Hiera dims 8..64, stages (1, 2, 3, 1), 64×64 images, FPN 16 channels
    torch.save(ckpt, tmp_path / "sam2.1_hiera_tiny.pt")
    model = load_original_sam2(tmp_path / "sam2.1_hiera_tiny.pt", config=_tiny_sam2_config())
    sd, hf = ckpt["model"], model.state_dict()
    pairs = [
        ("vision_encoder.backbone.pos_embed_window", "image_encoder.trunk.pos_embed_window"),
        ("vision_encoder.backbone.blocks.3.proj.weight", "image_encoder.trunk.blocks.3.proj.weight"),
        (
            "vision_encoder.backbone.blocks.5.mlp.proj_out.bias",
            "image_encoder.trunk.blocks.5.mlp.layers.1.bias",
        ),
        ("vision_encoder.neck.convs.2.weight", "image_encoder.neck.convs.2.conv.weight"),
        ("no_memory_embedding", "no_mem_embed"),
        (
            "mask_decoder.transformer.layers.0.cross_attn_image_to_token.o_proj.weight",
            "sam_mask_decoder.transformer.layers.0.cross_attn_image_to_token.out_proj.weight",
        ),
        (
            "mask_decoder.transformer.layers.1.mlp.proj_in.weight",
            "sam_mask_decoder.transformer.layers.1.mlp.layers.0.weight",
        ),
        (
            "mask_decoder.pred_obj_score_head.proj_out.bias",
            "sam_mask_decoder.pred_obj_score_head.layers.2.bias",
        ),
        ("mask_decoder.conv_s1.weight", "sam_mask_decoder.conv_s1.weight"),
    ]
    for new, old in pairs:
        _same(hf[new], sd[old])
    points = [sd[f"sam_prompt_encoder.point_embeddings.{i}.weight"] for i in range(4)]
    _same(hf["prompt_encoder.point_embed.weight"], torch.cat(points))
    image_part = {k: v for k, v in sd.items() if k not in orig.SAM2_VIDEO_KEYS}
    pe = hf["shared_image_embedding.positional_embedding"].numel()
    _check_coverage(model, image_part, [*image_part.values(), torch.cat(points)], duplicated=pe)

    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fpn = model.vision_encoder(images).fpn_hidden_states
        ref = _sam2_image_encoder(sd, images, **HIERA)
        out = model(pixel_values=images, input_points=torch.tensor([[[[10.0, 20.0]]], [[[40.0, 5.0]]]]))
    assert len(fpn) == 3
    for got, want in zip(fpn, ref, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert out.pred_masks.shape == (2, 1, 3, 16, 16) and torch.isfinite(out.pred_masks).all()


def test_sam2_base_plus_layout_matches_shipped_config_and_others_need_config(tmp_path):
    big = orig.sam2_checkpoint(
        embed_dim=112,
        stages=(2, 3, 16, 3),
        first_window=8,
        bkg=(14, 14),
        dim=256,
        mlp_dim=2048,
        device="meta",
    )["model"]
    config = _matching_sam2_config(_convert_sam2(big, Path("b+.pt")), Path("b+.pt"))
    assert config.to_dict() == load_arch_config("sam2-hiera-b+").to_dict()
    torch.save(orig.sam2_checkpoint(), tmp_path / "tiny.pt")
    torch.save(orig.segment_anything_state_dict(), tmp_path / "sam1.pth")
    for name, message in [("tiny.pt", "match none of the shipped SAM2"), ("sam1.pth", "unexpected tensors")]:
        with pytest.raises(CheckpointError, match=message) as info:
            load_original_sam2(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)
