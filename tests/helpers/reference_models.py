"""Plain-torch forwards of the original CLIP, segment-anything and SAM2 image encoders, written from their
papers' and repositories' descriptions, and tensor-by-tensor checks: the references that the converted
``transformers`` models are compared against."""

import math

import torch
import torch.nn.functional as F


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def fingerprint(t: torch.Tensor) -> tuple[float, ...]:
    """Order-free identity of a tensor's values (a transposed or reshaped copy has the same one)."""
    return tuple(sorted(t.detach().float().flatten().tolist()))


def check_coverage(model: torch.nn.Module, original: dict, pieces: list[torch.Tensor], duplicated: int = 0):
    """Every converted tensor holds the values of one original tensor (or piece), and all values arrive."""
    known = {fingerprint(t) for t in pieces}
    state = model.state_dict()
    strays = [k for k, v in state.items() if fingerprint(v) not in known]
    assert not strays, f"tensors not taken from the checkpoint: {strays[:5]}"
    assert sum(v.numel() for v in state.values()) - duplicated == sum(v.numel() for v in original.values())


def layer_norm(x, sd, p, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], eps)


def linear(x, sd, p):
    return F.linear(x, sd[f"{p}.weight"], sd[f"{p}.bias"])


def openai_transformer(x, sd, prefix, mask=None, act="quick_gelu"):
    """OpenAI CLIP ``Transformer``: pre-LN residual blocks, attention from ``in_proj``, QuickGELU MLP (open_clip
    models with ``quick_gelu: false``: GELU)."""
    n, (b, t, w) = 0, x.shape
    heads = w // 64
    while f"{prefix}.resblocks.{n}.ln_1.weight" in sd:
        p = f"{prefix}.resblocks.{n}"
        qkv = F.linear(
            layer_norm(x, sd, f"{p}.ln_1"), sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"]
        )
        q, k, v = qkv.chunk(3, -1)
        q, k, v = (z.reshape(b, t, heads, -1).transpose(1, 2) for z in (q, k, v))  # (B, heads, T, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + (0 if mask is None else mask)
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, w)
        x = x + linear(a, sd, f"{p}.attn.out_proj")
        h = linear(layer_norm(x, sd, f"{p}.ln_2"), sd, f"{p}.mlp.c_fc")
        h = h * torch.sigmoid(1.702 * h) if act == "quick_gelu" else F.gelu(h)
        x = x + linear(h, sd, f"{p}.mlp.c_proj")
        n += 1
    return x


def openai_encode_image(sd, images, act="quick_gelu"):
    patch = sd["visual.conv1.weight"].shape[-1]
    x = F.conv2d(images, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)  # (B, G*G, W)
    x = (
        torch.cat([sd["visual.class_embedding"].expand(len(x), 1, -1), x], 1)
        + sd["visual.positional_embedding"]
    )
    x = openai_transformer(layer_norm(x, sd, "visual.ln_pre"), sd, "visual.transformer", act=act)
    return layer_norm(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def openai_encode_text(sd, tokens, act="quick_gelu"):
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"]
    mask = torch.full((tokens.shape[1],) * 2, float("-inf")).triu(1)
    x = layer_norm(openai_transformer(x, sd, "transformer", mask, act), sd, "ln_final")
    return x[torch.arange(len(x)), tokens.argmax(-1)] @ sd["text_projection"]


def layer_norm_2d(x, sd, p):
    """segment-anything ``LayerNorm2d``: normalise over channels of B×C×H×W, eps 1e-6."""
    u = x.mean(1, keepdim=True)
    x = (x - u) / torch.sqrt((x - u).pow(2).mean(1, keepdim=True) + 1e-6)
    return sd[f"{p}.weight"][:, None, None] * x + sd[f"{p}.bias"][:, None, None]


def partition(x, ws):
    """B×H×W×C -> (B·nW)×ws×ws×C windows, zero-padding H, W up to multiples of ws."""
    b, h, w, c = x.shape
    x = F.pad(x, (0, 0, 0, (-w) % ws, 0, (-h) % ws))
    hp, wp = x.shape[1:3]
    return x.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c), (hp, wp)


def unpartition(x, ws, padded, size):
    hp, wp = padded
    b = x.shape[0] // (hp * wp // ws // ws)
    x = x.view(b, hp // ws, wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, : size[0], : size[1]]


def sam_attention(x, sd, p, heads):
    """segment-anything ``Attention``, decomposed relative positions (tables already at the right size)."""
    b, h, w, _ = x.shape
    q, k, v = linear(x, sd, f"{p}.qkv").reshape(b, h * w, 3, heads, -1).unbind(2)
    q, k, v = (z.transpose(1, 2).reshape(b * heads, h * w, -1) for z in (q, k, v))  # (B·heads, HW, d)
    d = q.shape[-1]
    rel_h = sd[f"{p}.rel_pos_h"][torch.arange(h)[:, None] - torch.arange(h)[None, :] + h - 1]  # (H, H, d)
    rel_w = sd[f"{p}.rel_pos_w"][torch.arange(w)[:, None] - torch.arange(w)[None, :] + w - 1]  # (W, W, d)
    r_q = q.reshape(b * heads, h, w, d)
    bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h)[:, :, :, :, None]
    bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w)[:, :, :, None, :]
    attn = ((q * d**-0.5) @ k.transpose(-2, -1)).view(b * heads, h, w, h, w) + bias_h + bias_w
    x = (attn.view(b * heads, h * w, h * w).softmax(-1) @ v).view(b, heads, h, w, d)
    return linear(x.permute(0, 2, 3, 1, 4).reshape(b, h, w, -1), sd, f"{p}.proj")


def sam_image_encoder(sd, images, *, heads, window, global_attn):
    """segment-anything ``ImageEncoderViT.forward``: B×3×H×W -> B×C×H/16×W/16 (here /8)."""
    e = "image_encoder"
    x = F.conv2d(images, sd[f"{e}.patch_embed.proj.weight"], sd[f"{e}.patch_embed.proj.bias"], stride=8)
    x = x.permute(0, 2, 3, 1) + sd[f"{e}.pos_embed"]  # (B, G, G, C)
    i = 0
    while f"{e}.blocks.{i}.norm1.weight" in sd:
        p, ws = f"{e}.blocks.{i}", 0 if i in global_attn else window
        shortcut, x = x, layer_norm(x, sd, f"{p}.norm1", 1e-6)
        size = x.shape[1:3]
        if ws:
            x, padded = partition(x, ws)
        x = sam_attention(x, sd, f"{p}.attn", heads)
        x = shortcut + (unpartition(x, ws, padded, size) if ws else x)
        h = F.gelu(linear(layer_norm(x, sd, f"{p}.norm2", 1e-6), sd, f"{p}.mlp.lin1"))
        x = x + linear(h, sd, f"{p}.mlp.lin2")
        i += 1
    x = layer_norm_2d(F.conv2d(x.permute(0, 3, 1, 2), sd[f"{e}.neck.0.weight"]), sd, f"{e}.neck.1")
    return layer_norm_2d(F.conv2d(x, sd[f"{e}.neck.2.weight"], padding=1), sd, f"{e}.neck.3")


def hiera_attention(x, sd, p, heads, pool):
    """SAM2 ``MultiScaleAttention``: optional 2×2 max-pooling of the queries."""
    b, h, w, _ = x.shape
    q, k, v = linear(x, sd, f"{p}.qkv").reshape(b, h * w, 3, heads, -1).unbind(2)
    if pool:
        q = F.max_pool2d(q.reshape(b, h, w, -1).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        h, w = q.shape[1:3]
        q = q.reshape(b, h * w, heads, -1)
    x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return linear(x.transpose(1, 2).reshape(b, h, w, -1), sd, f"{p}.proj")


def sam2_image_encoder(sd, images, *, heads, stages, windows, global_blocks):
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
        shortcut, x = x, layer_norm(x, sd, f"{p}.norm1", 1e-6)
        if f"{p}.proj.weight" in sd:
            shortcut = linear(x, sd, f"{p}.proj")
            shortcut = F.max_pool2d(shortcut.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1) if pool else shortcut
        size = x.shape[1:3]
        if ws:
            x, padded = partition(x, ws)
        x = hiera_attention(x, sd, f"{p}.attn", heads[stage], pool)
        if ws and pool:
            ws, size = ws // 2, shortcut.shape[1:3]
            padded = (size[0] + (-size[0]) % ws, size[1] + (-size[1]) % ws)
        x = shortcut + (unpartition(x, ws, padded, size) if ws else x)
        hid = F.gelu(linear(layer_norm(x, sd, f"{p}.norm2", 1e-6), sd, f"{p}.mlp.layers.0"))
        x = x + linear(hid, sd, f"{p}.mlp.layers.1")
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
