"""Numeric precision of a forward pass: fp32 as is, or bf16 / fp16 autocast on any device.

Weights stay fp32; ``torch.autocast`` runs matrix products and convolutions in the lower precision and keeps
reductions (softmax, normalisation, losses) in fp32. predict, evaluate, serve, train and bench use the same
context::

    with torch.inference_mode(), autocast(images.device, "bf16"):
        logits = model(images, classes)

The names load without torch (the command line lists them before any model is imported).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


def dtype(precision: str) -> torch.dtype:
    """The ``torch.dtype`` of ``precision`` ("fp32", "bf16" or "fp16")."""
    import torch

    check(precision)
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def check(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ``ValueError`` naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device: torch.device | str, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` ("fp32", "bf16" or "fp16") on the type of ``device``; fp32 runs as is."""
    import torch

    if check(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype(precision))


def has_native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware (CUDA from Ampere on; CPUs with AVX512-BF16 or
    AMX). Elsewhere bf16 is emulated and usually slower than fp32."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return True
