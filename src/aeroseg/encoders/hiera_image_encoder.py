"""SAM2 / SAM2.1 Hiera image encoder forward (paper Sec. 3.1 guidance) over ``transformers``' ``Sam2VisionModel``.

The same parameters and FPN features as ``Sam2VisionModel.forward`` (hub, directory and SAM2 checkpoints load
unchanged), without its extra work: ``transformers``' ``Sam2MultiScaleAttention`` also computes and discards a
softmax over the heads of every token, the neck builds sine position encodings the guidance never reads, and
windows are padded and permuted by copies. Here windows are gathers of the tokens or of their projections
(:mod:`aeroseg.encoders.attention_windows`), taken in blocks of windows that stay in cache, and without autograd a block
on whole windows (the first two stages, 65,536 and 16,384 tokens at 1024²) runs norm, attention, projection
and MLP per block of windows before writing its rows back (residual forms: :mod:`aeroseg.encoders.residual`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.encoders.attention_windows import padded_rows, window_index
from aeroseg.encoders.residual import add_linear, add_mlp, lean

# tokens per block of windows. Measured on 2 cores (Hiera-B+ at 1024², min of 5): 4096 tokens
# (5-11 MiB of query/key/value) take the stage-2 block with query pooling from 0.50 to 0.33 s and are as fast
# as one block for the other stages; 1024 and 8192 lie between.
WINDOW_TOKENS = 4096


def hiera_fpn_forward(encoder: nn.Module, pixels: torch.Tensor) -> list[torch.Tensor]:
    """pixels: B×3×S×S (normalised) -> the FPN levels B×C_fpn×h×w, high to low resolution, as
    ``Sam2VisionModel(pixels).fpn_hidden_states``."""
    trunk = encoder.backbone
    x = trunk.patch_embed(pixels)  # (B, h, w, C)
    x = x + trunk._get_pos_embed(x.shape[1:3])
    stages = []
    for i, block in enumerate(trunk.blocks):
        x = hiera_block(block, x)
        if i in trunk.stage_ends:
            stages.append(x)
    return _fpn(encoder.neck, stages)[-encoder.num_feature_levels :][::-1]


def hiera_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One ``Sam2MultiScaleBlock``: x: B×h×w×C_in -> B×h'×w'×C_out (h' = h / query stride on a stage's first block)."""
    ws, stride = block.window_size, block.query_stride
    whole_windows = ws > 0 and not x.shape[1] % ws and not x.shape[2] % ws
    square_cells = stride is None or (stride[0] == stride[1] and not ws % stride[0])  # cells inside windows
    if whole_windows and square_cells and lean(x):
        return _windowed_block(block, x)
    shortcut = x
    y = block.layer_norm1(x)
    if block.dim != block.dim_out:
        shortcut = _max_pool(block.proj(y), stride)  # (B, h', w', C_out)
    out = _attention(block.attn, y, ws, stride)
    x = add_linear(shortcut, block.attn.proj, out)
    mlp = block.mlp
    return add_mlp(x, block.layer_norm2(x), mlp.proj_in, mlp.activation, mlp.proj_out)


def _windowed_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A block on whole ws×ws windows, pooling cells inside windows (Hiera's first two stages and their ends at
    1024²), in blocks of ``WINDOW_TOKENS`` tokens: norm, shortcut, attention, projection and MLP of a block of
    windows run while its tokens are in cache, and its results go to their rows of the (pooled) grid, which the
    windows partition. x: B×h×w×C_in -> B×h'×w'×C_out."""
    b, h, w, c = x.shape
    ws, stride, dim = block.window_size, block.query_stride, block.dim_out
    s = stride[0] if stride else 1
    gather, _ = window_index(b, h, w, ws, x.device)  # no padding: a permutation of the token rows
    placed, _ = window_index(b, h // s, w // s, ws // s, x.device)  # the same windows on the pooled grid
    windows = max(1, WINDOW_TOKENS // ws**2)  # per block
    tokens = x.reshape(-1, c)
    out = tokens.new_empty(placed.numel(), dim)
    mlp = block.mlp
    for rows, places in zip(
        gather.split(windows * ws**2), placed.split(windows * (ws // s) ** 2), strict=True
    ):
        t = tokens.index_select(0, rows)  # (n·ws², C_in), window-major
        y = block.layer_norm1(t)
        if block.dim != dim:
            t = _max_pool(block.proj(y).view(-1, ws, ws, dim), stride).reshape(-1, dim)
        qkv = block.attn.qkv(y).view(-1, ws, ws, 3 * dim)
        t = add_linear(t, block.attn.proj, _attend(block.attn, qkv, stride).reshape(-1, dim))
        out.index_copy_(
            0, places, add_mlp(t, block.layer_norm2(t), mlp.proj_in, mlp.activation, mlp.proj_out)
        )
    return out.view(b, h // s, w // s, dim)


def _attention(attn: nn.Module, y: torch.Tensor, ws: int, stride: tuple[int, int] | None) -> torch.Tensor:
    """y: B×h×w×C_in normalised tokens -> (B·h'·w')×C_out (before ``proj``): attention in ws×ws windows
    (the whole grid when ws = 0), queries max-pooled by ``stride`` inside each window.

    Windows go in blocks of about ``WINDOW_TOKENS`` tokens, each gathered, projected and attended while its
    query/key/value rows are in cache."""
    b, h, w, c = y.shape
    if ws == 0:
        return _attend(attn, attn.qkv(y), stride).reshape(-1, attn.dim_out)
    gather, _ = window_index(b, h, w, ws, y.device)
    padded = bool(h % ws or w % ws)
    if padded:  # project the tokens, then gather (a padded token's qkv is the bias)
        source = F.linear(padded_rows(y), attn.qkv.weight, attn.qkv.bias)
    else:  # gather the narrower tokens, then project
        source = y.reshape(-1, c)
    step = max(1, WINDOW_TOKENS // ws**2) * ws**2  # whole windows
    blocks = []
    for start in range(0, gather.numel(), step):
        rows = source.index_select(0, gather[start : start + step])
        qkv = rows if padded else attn.qkv(rows)
        blocks.append(_attend(attn, qkv.view(-1, ws, ws, qkv.shape[-1]), stride))
    out = torch.cat(blocks).reshape(-1, attn.dim_out)  # (B·nW·L', C_out), window-major
    qs = ws // stride[0] if stride else ws
    ho, wo = (h, w) if not stride else (h // stride[0], w // stride[1])
    _, scatter = window_index(b, ho, wo, qs, y.device)
    return out.index_select(0, scatter)


def _attend(attn: nn.Module, qkv: torch.Tensor, stride: tuple[int, int] | None) -> torch.Tensor:
    """qkv: N×s×s×3C_out (windows, or the whole grid) -> N×L'×C_out, L' = (s / stride)² pooled queries."""
    heads = attn.num_attention_heads
    q, k, v = qkv.view(*qkv.shape[:3], 3, heads, -1).unbind(3)  # (N, s, s, A, d) each
    if stride:
        q = _max_pool(q.flatten(-2), stride).unflatten(-1, (heads, -1))
    out = F.scaled_dot_product_attention(
        *(t.flatten(1, 2).transpose(1, 2) for t in (q, k, v))
    )  # (N, A, L', d)
    return out.transpose(1, 2).flatten(2)


def _max_pool(x: torch.Tensor, stride: tuple[int, int] | None) -> torch.Tensor:
    """x: B×h×w×C -> B×(h/s)×(w/s)×C (``do_pool`` of SAM2: max over s×s cells, remainder dropped)."""
    if not stride:
        return x
    return F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride).permute(0, 2, 3, 1)


def _fpn(neck: nn.Module, stages: list[torch.Tensor]) -> list[torch.Tensor]:
    """``Sam2VisionNeck`` without its position encodings: stages B×h×w×C (fine to coarse) -> levels, coarse first."""
    n = len(neck.convs) - 1
    levels, prev = [], None
    for i in range(n, -1, -1):
        lateral = _conv(neck.convs[n - i], stages[i])
        if prev is None or i not in neck.fpn_top_down_levels:
            prev = lateral
        else:
            prev = lateral + F.interpolate(prev, scale_factor=2.0, mode="nearest")
        levels.append(prev)
    return levels


def _conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv applied to x: B×h×w×C -> B×C'×h×w; a 1×1 convolution is a product over the channels-last tokens
    (the FPN's lateral convolutions: no layout change, no slow convolution path)."""
    pointwise = conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding in ((0, 0), "valid")
    if not pointwise or conv.groups != 1:
        return conv(x.permute(0, 3, 1, 2))
    return F.linear(x, conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)
