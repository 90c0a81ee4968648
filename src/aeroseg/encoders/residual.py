"""Residual steps of the guidance encoders' transformer blocks (SAM ViT, SAM2 Hiera), lean on memory.

Out of place as ``transformers`` writes them while autograd records (a fine-tuned guidance encoder) or autocast
runs; otherwise (the frozen guidance encoder in fp32) they allocate less: the attention projection's sum lands
in the projection's output, and the MLP runs in blocks of tokens whose hidden activations stay in cache, its
activation in place and its output projection accumulated into the block's residual stream inside the matrix
product (``addmm_``). Each large allocation avoided is one pass of page faults on a fresh buffer, which costs
as much as the pass itself on a CPU. Results equal ``transformers``' to rounding (the bias is added to the
residual before the product instead of after it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import GELUActivation

# tokens per block of the MLP without autograd. Measured on 2 cores (fp32): 2048 keeps the hidden block in
# cache for SAM2 Hiera's 112- and 224-wide stages (MLP 1.6× and 1.3× faster than unblocked) and is as fast as
# unblocked for SAM ViT-L's 1024-wide tokens; 256 rows lose 30% there (the products get too thin).
MLP_ROWS = 2048


def lean(x: torch.Tensor) -> bool:
    """Whether the memory-lean forms apply: no autograd recording and no autocast (whose casts the in-place
    and ``out=`` products do not follow)."""
    return not torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


def add_linear(x: torch.Tensor, linear: nn.Linear, y: torch.Tensor) -> torch.Tensor:
    """x + linear(y) for x: …×C_out, y: …×C_in with the same leading shape; x itself is left unchanged."""
    out = linear(y).view_as(x)
    if not lean(x):
        return x + out
    return out.add_(x)


def add_mlp(
    x: torch.Tensor, z: torch.Tensor, lin1: nn.Linear, act: nn.Module, lin2: nn.Linear
) -> torch.Tensor:
    """x + lin2(act(lin1(z))) for x, z: …×C (z: the normalised x), consuming x when autograd is off (x must be
    a contiguous tensor the caller owns and no longer reads).

    Without autograd the tokens go through in blocks of ``MLP_ROWS``: a block's hidden activations (2048 × 4C)
    stay in cache from the first product through the activation to the second, which accumulates into x."""
    if not lean(x):
        return x + lin2(act(lin1(z)))
    flat, tokens = x.view(-1, x.shape[-1]), z.reshape(-1, z.shape[-1])
    if lin2.bias is not None:
        flat.add_(lin2.bias)
    buffer = z.new_empty(min(MLP_ROWS, len(tokens)), lin1.out_features)
    in_place_gelu = isinstance(act, GELUActivation) and act.act is F.gelu
    for start in range(0, len(tokens), MLP_ROWS):
        rows = slice(start, start + MLP_ROWS)
        hidden = buffer[: len(tokens[rows])]
        if lin1.bias is None:
            torch.mm(tokens[rows], lin1.weight.t(), out=hidden)
        else:
            torch.addmm(lin1.bias, tokens[rows], lin1.weight.t(), out=hidden)
        if in_place_gelu:
            torch.ops.aten.gelu_(hidden)
        else:
            hidden = act(hidden)
        flat[rows].addmm_(hidden, lin2.weight.t())
    return x
