"""SAM ViT image encoder forward (paper Sec. 3.1 guidance) over the weights of ``transformers``' ``SamVisionEncoder``.

The same parameters, names and results as ``SamVisionEncoder.forward`` (so hub, directory and segment-anything
checkpoints load unchanged), computed faster:

- the decomposed relative-position bias (MViTv2, as in segment-anything) is never materialised for the whole
  image: attention runs in blocks of queries, each adding its own slice of ``rel_h`` + ``rel_w`` written into
  one reused buffer (``"sdpa"`` and ``"eager"``), or inside the kernel as a score modification (``"flex"``,
  ``flex_attention``);
- window attention computes the query/key/value and output projections on the image tokens only: a
  zero-padded token's projection is the bias alone, so padding is filled with it after the product; windows
  are gathered one kernel call at a time;
- without autograd the residual and MLP steps allocate little (:mod:`aeroseg.encoders.residual`).

``attention``: ``"sdpa"`` (fused ``scaled_dot_product_attention`` per block of queries; the default),
``"flex"`` (``torch.nn.attention.flex_attention``, compiled; for GPUs: on CPU its generated kernel is
slower here) or ``"eager"`` (matrix products and softmax per block of queries).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.encoders.attention_windows import padded_rows, window_index
from aeroseg.encoders.residual import add_linear, add_mlp

ATTENTION_PATHS = ("sdpa", "flex", "eager")
# attention scores (or bias) held at once per kernel call: 2**22 fp32 values (16 MiB). Measured on 2 shared
# cores: 2**20 (4 MiB, in cache) costs as much on one thread, but the 4× more calls (each a parallel region)
# cost more CPU time when threads are descheduled by neighbours.
BLOCK_SCORES = 1 << 22


def sam_vit_forward(
    encoder: nn.Module, pixels: torch.Tensor, *, taps: Sequence[int], attention: str = "sdpa"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """pixels: B×3×S×S (normalised) -> (last block B×h×w×C, [B×h×w×C after each 1-based block in ``taps``])."""
    x = encoder.patch_embed.projection(pixels).permute(0, 2, 3, 1)  # (B, h, w, C)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    taken = []
    for i, layer in enumerate(encoder.layers, start=1):
        x = vit_block(layer, x, attention)
        if i in taps:
            taken.append(x)
    return x, taken


def vit_block(layer: nn.Module, x: torch.Tensor, attention: str) -> torch.Tensor:
    """One ``SamVisionLayer``: x: B×h×w×C -> B×h×w×C."""
    y = layer.layer_norm1(x)
    if layer.window_size > 0:
        y = _window_attention(layer.attn, y, layer.window_size, attention)
    else:
        y = _attention(layer.attn, layer.attn.qkv(y), attention)
    x = add_linear(x, layer.attn.proj, y)
    return add_mlp(x, layer.layer_norm2(x), layer.mlp.lin1, layer.mlp.act, layer.mlp.lin2)


def _window_attention(attn: nn.Module, y: torch.Tensor, ws: int, attention: str) -> torch.Tensor:
    """y: B×h×w×C normalised tokens -> B×h×w×C attention output (before ``proj``), ws×ws windows.

    segment-anything zero-pads after the norm, so a padded token's qkv is the bias alone: qkv is computed on the
    image tokens, one row holding the bias is appended, and gathers build the padded windows, one block of
    windows per kernel call (``BLOCK_SCORES``) while the block is in cache (flex: all windows in one call).
    """
    b, h, w, c = y.shape
    qkv = F.linear(padded_rows(y), attn.qkv.weight, attn.qkv.bias)  # (B·h·w + 1, 3C)
    gather, scatter = window_index(b, h, w, ws, y.device)
    per_window = ws * ws
    windows = max(1, BLOCK_SCORES // (per_window**2 * attn.num_attention_heads))
    step = gather.numel() if attention == "flex" else windows * per_window
    buffer = qkv.new_empty(BLOCK_SCORES)
    blocks = [
        _attention(attn, qkv.index_select(0, rows).view(-1, ws, ws, qkv.shape[-1]), attention, buffer)
        for rows in gather.split(step)
    ]  # (windows, ws, ws, C) each
    return torch.cat(blocks).view(-1, c).index_select(0, scatter).view(b, h, w, c)


def _attention(
    attn: nn.Module, qkv: torch.Tensor, attention: str, buffer: torch.Tensor | None = None
) -> torch.Tensor:
    """qkv: N×h×w×3C -> N×h×w×C, multi-head attention with decomposed relative positions (before ``proj``);
    ``buffer``: flat scratch for the bias of one kernel call (one is made when None)."""
    n, h, w, _ = qkv.shape
    heads = attn.num_attention_heads
    q, k, v = qkv.reshape(n, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # (N, A, L, d) each
    rel_h = rel_w = None
    if attn.use_rel_pos:
        table_h = attn.get_rel_pos(h, h, attn.rel_pos_h)  # (h, h, d)
        table_w = attn.get_rel_pos(w, w, attn.rel_pos_w)  # (w, w, d)
        grid_q = q.reshape(n, heads, h, w, -1)
        rel_h = torch.einsum("nahwc,hkc->nahwk", grid_q, table_h).reshape(n, heads, h * w, h)
        rel_w = torch.einsum("nahwc,wkc->nahwk", grid_q, table_w).reshape(n, heads, h * w, w)
    if attention == "flex":
        out = _flex(q, k, v, rel_h, rel_w).transpose(1, 2)
    elif attention in ("sdpa", "eager"):
        out = _blockwise(q, k, v, rel_h, rel_w, fused=attention == "sdpa", buffer=buffer)
    else:
        raise ValueError(f"attention must be one of {ATTENTION_PATHS}, got {attention!r}")
    return out.reshape(n, h, w, -1)  # (N, L, A, d) -> (N, h, w, A·d)


def _bias(rel_h: torch.Tensor, rel_w: torch.Tensor, buffer: torch.Tensor | None) -> torch.Tensor:
    """rel_h: ...×L×h, rel_w: ...×L×w -> ...×L×(h·w), the bias of query i on key (kh, kw).

    Written into ``buffer`` unless autograd records: one buffer serves every kernel call of a layer, so its
    pages are touched once (a fresh 16 MiB tensor per call costs several times the sum in page faults)."""
    if buffer is None or torch.is_grad_enabled():
        return (rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2)
    shape = (*rel_h.shape, rel_w.shape[-1])
    out = buffer[: rel_h.numel() * rel_w.shape[-1]].view(shape)
    return torch.add(rel_h[..., :, None], rel_w[..., None, :], out=out).flatten(-2)


def _blockwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    *,
    fused: bool,
    buffer: torch.Tensor | None = None,
) -> torch.Tensor:
    """q, k, v: N×A×L×d; rel_h: N×A×L×h, rel_w: N×A×L×w (or None) -> N×L×A×d (token-major, as ``proj`` reads).

    Calls cover whole (sequence, head) pairs when their scores fit in ``BLOCK_SCORES``, otherwise one head and
    a block of queries: the bias of a call is built just before it and is still in cache when it is read.
    """
    n, a, length, _ = q.shape
    per_pair = length * length
    if rel_h is not None and (buffer is None or buffer.numel() < length):
        buffer = q.new_empty(max(BLOCK_SCORES, length))
    if per_pair * a <= BLOCK_SCORES:  # several whole sequences per call (window attention)
        step = max(1, BLOCK_SCORES // (per_pair * a))
        blocks = []
        for i in range(0, n, step):
            s = slice(i, i + step)
            bias = None if rel_h is None else _bias(rel_h[s], rel_w[s], buffer)
            blocks.append(_kernel(q[s], k[s], v[s], bias, fused).transpose(1, 2))
        return torch.cat(blocks)
    rows = max(1, min(length, BLOCK_SCORES // length))  # queries per call (global attention)
    out = q.new_empty(n, length, a, v.shape[-1])
    for i in range(n):
        for j in range(a):
            pair = (slice(i, i + 1), slice(j, j + 1))  # 4-D blocks: the fused CPU kernel takes no 3-D input
            for r in range(0, length, rows):
                s = (*pair, slice(r, r + rows))
                bias = None if rel_h is None else _bias(rel_h[s], rel_w[s], buffer)  # (1, 1, rows, h·w)
                out[i, r : r + rows, j] = _kernel(q[s], k[pair], v[pair], bias, fused)[0, 0]
    return out


def _kernel(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, fused: bool
) -> torch.Tensor:
    """softmax(q·kᵀ/√d + bias)·v for one block; q: …×Lq×d, k, v: …×L×d, bias: …×Lq×L."""
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(-1) @ v


@functools.cache
def _compiled_flex() -> Callable[..., torch.Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor | None, rel_w: torch.Tensor | None
) -> torch.Tensor:
    """The bias added to each score inside the kernel: key index kv -> (kv // w, kv % w)."""
    if rel_h is None:
        return _compiled_flex()(q, k, v)
    w = rel_w.shape[-1]

    def score_mod(score, b, head, q_idx, kv_idx):  # noqa: ANN001, ANN202 - flex_attention's signature
        return score + rel_h[b, head, q_idx, kv_idx // w] + rel_w[b, head, q_idx, kv_idx % w]

    return _compiled_flex()(q, k, v, score_mod=score_mod)
