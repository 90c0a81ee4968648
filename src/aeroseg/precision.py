"""Numeric precision of a forward pass: fp32 as is, or bf16 / fp16 autocast on any device.

Weights stay fp32; ``torch.autocast`` runs matrix products and convolutions in the lower precision. predict,
evaluate, serve, train and bench use the same context::

    with torch.inference_mode(), autocast(images.device, "bf16"):
        logits = model(images, classes)

What stays fp32 under autocast (docs/model.md §12) is decided here, not left to autocast's op lists
(which differ between CPU and CUDA: on a CPU, bf16 softmax, norms and resizes stay bf16, and the antialiased
resize has no bf16 kernel at all): :func:`fp32` runs a function in fp32 (the resizes, the cosine
normalisation of Eq. 3, the softmaxes we write), :func:`keep_norms_fp32` makes a model's LayerNorm and
GroupNorm layers take and return fp32. ``"auto"`` (:func:`resolve`) is bf16 where the device multiplies bf16
in hardware, fp32 elsewhere.

The names load without torch (the command line lists them before any model is imported).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch
    from torch import nn

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
CHOICES: tuple[str, ...] = (*PRECISIONS, "auto")  # what predict, evaluate and serve take (auto: resolve())
AUTO_HELP = (
    "autocast precision; auto: bf16 where the device has native bf16 (recent GPUs and CPUs), else fp32"
)
Fn = TypeVar("Fn", bound=Callable[..., Any])


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


def resolve(requested: str, device: torch.device | str) -> str:
    """The precision a run uses: ``requested`` itself ("fp32", "bf16", "fp16"), or for ``"auto"`` bf16 where
    ``device`` multiplies bf16 matrices in hardware (:func:`has_native_bf16`: CUDA from Ampere on, CPUs with
    AVX512-BF16 or AMX) and fp32 elsewhere (emulated bf16 is slower than fp32)."""
    import torch

    if requested != "auto":
        return check(requested)
    device = torch.device(device)
    return "bf16" if device.type in ("cuda", "cpu") and has_native_bf16(device) else "fp32"


def _to_fp32(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_fp32(v) for v in value)
    return value


def fp32(function: Fn) -> Fn:
    """``function`` run in fp32 under any autocast: autocast off on every device type, floating tensor
    arguments (also inside lists and tuples) cast to float32. Its result is then fp32 too."""

    @functools.wraps(function)
    def in_fp32(*args: Any, **kwargs: Any) -> Any:
        import torch

        with contextlib.ExitStack() as stack:
            for kind in ("cpu", "cuda", "mps", "xpu"):
                if torch.is_autocast_enabled(kind):
                    stack.enter_context(torch.autocast(device_type=kind, enabled=False))
            return function(*_to_fp32(args), **{k: _to_fp32(v) for k, v in kwargs.items()})

    return in_fp32  # type: ignore[return-value]


def _fp32_inputs(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return _to_fp32(args)


def keep_norms_fp32(model: nn.Module) -> int:
    """Make every LayerNorm and GroupNorm of ``model`` (subclasses included: SAM's, SAM2's) take its input in
    fp32, so that under autocast it normalises and returns fp32 on CPU as on CUDA (CUDA's autocast runs them
    in fp32 already; a CPU's keeps them in bf16). Without autocast nothing changes. Returns how many."""
    from torch import nn

    count = 0
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and not getattr(module, "_keeps_fp32", False):
            module.register_forward_pre_hook(_fp32_inputs)
            module._keeps_fp32 = True
            count += 1
    return count
