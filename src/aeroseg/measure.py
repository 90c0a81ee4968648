"""The instruments and measurements of ``aeroseg bench`` and ``benchmarks/``: the models measured, a FLOP
counter that knows the CPU attention kernel, a tracker of tensor memory, per-component probes wrapped around
the model's own forward, the matrix-multiply peak, timed forwards, predict throughput, a training step and the
description of the machine.

Components are timed inside the model's own forward (their methods are wrapped while a measurement runs),
so the code measured is the code that predict and evaluate run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from aeroseg import registry
from aeroseg._tiny import build_tiny
from aeroseg.data.info import BUILTIN, builtin_split
from aeroseg.inference import sliding_window_scores
from aeroseg.losses import AerOSegLoss
from aeroseg.modeling.aeroseg import AerOSeg
from aeroseg.precision import autocast, has_native_bf16
from aeroseg.training_free import model as training_free_model
from aeroseg.training_free import segearth_ov3
from aeroseg.training_free.segearth_ov import SegEarthOV
from aeroseg.windows import window_starts

COMPONENTS = ("clip", "text", "guidance", "correlation", "refinement", "decoder")
MIB = 2**20


# ------------------------------------------------------------------------------------------ what runs
def class_names(count: int) -> list[str]:
    """``count`` distinct class names: the benchmarks' own (iSAID, DLRSD, OpenEarthMap), then "object N"."""
    names = list(dict.fromkeys(name for dataset in BUILTIN for name in builtin_split(dataset)[0].classes))
    return (names + [f"object {i}" for i in range(len(names), count)])[:count]


def build_model(preset: str, short: bool, seed: int = 0) -> nn.Module:
    """The paper-size model of ``preset`` with random weights (offline, seeded), or its tiny version."""
    torch.manual_seed(seed)
    if short:
        return build_tiny(preset, seed)
    return registry.build(preset, pretrained=False)


def compile_blocks(model: nn.Module) -> int:
    """``torch.compile`` each block of every stack (``nn.ModuleList``) in the model; returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and not getattr(module, "_bench_compiled", False):
            for block in module:
                block.compile()
                for inner in block.modules():  # blocks inside a compiled block are traced with it
                    inner._bench_compiled = True
                count += 1
    return count


# ---------------------------------------------------------------------------------------- instruments
def _clock(device: torch.device) -> float:
    if device.type != "cpu":
        torch.accelerator.synchronize()
    return time.perf_counter()


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _inplace_addmm_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


# FlopCounterMode knows the CUDA attention kernels only (the CPU one has the same cost) and not the in-place
# product the guidance encoders accumulate their MLP output with (``aeroseg.encoders.residual``).
FLOP_MAPPING = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    torch.ops.aten.addmm_: _inplace_addmm_flop,
}


class MemoryTracker(TorchDispatchMode):
    """Bytes of the tensor storages created while active and still alive, and their peak (any device)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size and key not in self.live:
                    self.live[key] = size
                    self.current += size
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


@dataclass
class _Record:
    calls: int = 0
    seconds: float = 0.0
    flop: int = 0
    peak_bytes: int = 0


def _targets(model: nn.Module) -> list[tuple[str, Any, str]]:
    """(component, object, method): the calls the model's forward makes (a component may span methods; the
    training-free presets' SimFeatUp runs per crop, SAM 3's detector once over all prompts)."""
    if isinstance(model, AerOSeg):
        return [
            ("clip", model.backbone, "encode_image"),
            ("text", model.backbone, "encode_text"),
            ("guidance", model.guidance_encoder, "forward"),
            ("correlation", model.correlation, "forward"),
            ("refinement", model.refinement, "forward"),
            ("decoder", model.decoder, "forward"),
        ]
    if isinstance(model, SegEarthOV):
        targets = [("clip", model.backbone, "_dense_tokens"), ("text", model.backbone, "encode_text")]
        if model.upsampler is not None:
            targets += [("simfeatup", model.upsampler, "kernels"), ("simfeatup", model.upsampler, "upsample")]
        return targets
    if isinstance(model, segearth_ov3.SegEarthOV3):
        return [
            ("sam3 encoder", model.sam3, "get_vision_features"),
            ("text", model.sam3, "get_text_features"),
            ("detector", model.sam3, "forward"),
            ("fusion", segearth_ov3, "fuse_heads"),
        ]
    if isinstance(model, training_free_model.TrainingFreeSegmenter):
        targets = [("clip", model.backbone, "encode_dense"), ("text", model.backbone, "encode_text")]
        if model.sam is not None:
            targets += [("sam", model.sam, "forward"), ("regions", training_free_model, "kmeans_regions")]
        return [*targets, ("upsampling", training_free_model, "joint_bilateral_upsample")]
    return []


@contextlib.contextmanager
def probe(model: nn.Module, device: torch.device, counting: bool) -> Iterator[dict[str, Any]]:
    """Record calls and seconds of every component while active (and FLOPs and peak memory if ``counting``).

    Yields ``{"components": {name: _Record}, "flops": FlopCounterMode|None, "memory": MemoryTracker|None}``.
    """
    targets = _targets(model)
    records = {name: _Record() for name, _, _ in targets}
    flops = FlopCounterMode(display=False, custom_mapping=FLOP_MAPPING) if counting else None
    memory = MemoryTracker() if counting else None

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def measured(*args: Any, **kwargs: Any) -> Any:
            record = records[name]
            flop0 = flops.get_total_flops() if flops else 0
            if memory:
                base, outer_peak = memory.current, memory.peak
                memory.peak = memory.current
            start = _clock(device)
            try:
                return method(*args, **kwargs)
            finally:
                record.seconds += _clock(device) - start
                record.calls += 1
                if flops:
                    record.flop += flops.get_total_flops() - flop0
                if memory:
                    record.peak_bytes = max(record.peak_bytes, memory.peak - base)
                    memory.peak = max(memory.peak, outer_peak)

        return measured

    originals = [(owner, method, vars(owner).get(method)) for _, owner, method in targets]
    for name, owner, method in targets:
        setattr(owner, method, wrap(name, getattr(owner, method)))
    try:
        with contextlib.ExitStack() as stack:
            for mode in (memory, flops):
                if mode is not None:
                    stack.enter_context(mode)
            yield {"components": records, "flops": flops, "memory": memory}
    finally:
        for owner, method, original in originals:
            if original is None:
                delattr(owner, method)  # back to the class's method
            else:
                setattr(owner, method, original)  # a module's function


# ---------------------------------------------------------------------------------------- measurements
def gemm_peak(device: torch.device, dtype: torch.dtype, *, max_n: int = 4096, repeats: int = 5) -> float:
    """Best GFLOP/s of ``torch.matmul`` on n×n matrices over the operand layouts A·B, A·Bᵀ and Aᵀ·B; n doubles
    from 512 until one product takes 0.1 s (at most ``max_n``)."""
    best = 0.0
    for layout in ("nn", "nt", "tn"):
        n = 512
        while True:
            a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
            x, y = {"nn": (a, b), "nt": (a, b.t()), "tn": (a.t(), b)}[layout]
            start = _clock(device)
            torch.matmul(x, y)
            if _clock(device) - start >= 0.1 or n >= max_n:
                break
            n *= 2
        for _ in range(repeats):
            start = _clock(device)
            torch.matmul(x, y)
            best = max(best, 2 * n**3 / (_clock(device) - start) / 1e9)
    return best


def sustained_gemm(device: torch.device, *, seconds: float = 1.0, n: int = 2048) -> float:
    """Mean fp32 GFLOP/s of n×n products (A·Bᵀ, as ``F.linear``) repeated for about ``seconds``.

    Taken beside each timed run: on a shared host the cores' speed drifts by tens of percent within a minute
    (2048² products on this 2-core VM: 99-169 GFLOP/s, best of 3 every 2 s), so a forward is set against the
    rate the same cores sustained around it, not only against the best burst ever seen (:func:`gemm_peak`)."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    torch.matmul(a, b.t())
    done, start = 0, _clock(device)
    while True:
        torch.matmul(a, b.t())
        done += 1
        elapsed = _clock(device) - start
        if elapsed >= seconds:
            return 2 * n**3 * done / elapsed / 1e9


def timed_forward(model: nn.Module, images: torch.Tensor, classes: list[str], precision: str, counting: bool):
    """One forward with a fresh class list (the text encoder runs). → logits, seconds, probe."""
    model.eval()  # also empties AerOSeg's text cache; the training-free models keep theirs across eval()
    if hasattr(model, "_text_cache"):
        model._text_cache = None  # every run encodes its class list
    with (
        torch.inference_mode(),
        autocast(images.device, precision),
        probe(model, images.device, counting) as p,
    ):
        start = _clock(images.device)
        logits = model(images, classes)
        seconds = _clock(images.device) - start
    return logits, seconds, p


def count_forward(
    model: nn.Module, images: torch.Tensor, classes: list[str]
) -> tuple[dict[str, Any], torch.Tensor]:
    """FLOPs, peak tensor memory and calls of each component in one fp32 forward. → (result, logits)."""
    logits, _, p = timed_forward(model, images, classes, "fp32", counting=True)
    records = p["components"]
    components = {
        name: {"gflop": r.flop / 1e9, "peak_mib": r.peak_bytes / MIB, "calls": r.calls}
        for name, r in records.items()
    }
    total = p["flops"].get_total_flops()
    components["other"] = {"gflop": (total - sum(r.flop for r in records.values())) / 1e9}
    result = {"gflop": total / 1e9, "peak_mib": p["memory"].peak / MIB, "components": components}
    return result, logits


def time_forward(
    model: nn.Module,
    images: torch.Tensor,
    classes: list[str],
    *,
    precision: str,
    repeats: int,
    warmup: bool,
    probe: Callable[[], float] | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Median seconds of the forward and of each component over ``repeats`` runs. → (result, logits).

    ``probe`` (e.g. :func:`sustained_gemm`) is called before the first run and after each: ``result["beside"]``
    holds, per run, the mean of the two probes around it."""
    if warmup:
        timed_forward(model, images, classes, precision, counting=False)
    probes = [probe()] if probe else []
    runs = []
    for _ in range(repeats):
        runs.append(timed_forward(model, images, classes, precision, counting=False))
        if probe:
            probes.append(probe())
    totals = [seconds for _, seconds, _ in runs]
    components = {
        name: {"seconds": statistics.median(p["components"][name].seconds for _, _, p in runs)}
        for name in runs[0][2]["components"]
    }
    median = statistics.median(totals)
    components["other"] = {"seconds": max(0.0, median - sum(c["seconds"] for c in components.values()))}
    result = {"seconds": median, "seconds_best": min(totals), "components": components, "runs": totals}
    if probe:
        result["beside"] = [
            (before + after) / 2 for before, after in zip(probes[:-1], probes[1:], strict=True)
        ]
    return result, runs[-1][0]


def measure_predict(
    model: nn.Module, *, raster: int, window: int, classes: list[str], batch_size: int, device: torch.device
) -> dict[str, Any]:
    """Megapixels per second of ``sliding_window_scores`` on a random raster×raster image (fp32)."""
    image = torch.rand(3, raster, raster, generator=torch.Generator().manual_seed(1)).to(device)
    overlap = 0.25
    model.eval()
    start = _clock(device)
    sliding_window_scores(model, image, classes, window=window, overlap=overlap, batch_size=batch_size)
    seconds = _clock(device) - start
    windows = len(window_starts(raster, window, overlap)) ** 2
    return {
        "raster": raster,
        "window": window,
        "overlap": overlap,
        "windows": windows,
        "seconds": seconds,
        "megapixels_per_second": raster**2 / 1e6 / seconds,
    }


def measure_train_step(
    model: nn.Module,
    *,
    image_size: int,
    batch_size: int,
    classes: list[str],
    repeats: int,
    device: torch.device,
) -> dict[str, Any]:
    """Median seconds of forward_train + AerOSegLoss + backward + AdamW step (after one warm-up step)."""
    config = model.config
    if config.back_projection:  # the back-projection is built for the seen classes of training
        classes = class_names(config.back_projection_classes)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(batch_size, 3, image_size, image_size, generator=g).to(device)
    masks = torch.randint(0, len(classes), (batch_size, image_size, image_size), generator=g).to(device)
    loss_fn = AerOSegLoss(config)
    optimizer = torch.optim.AdamW(model.param_groups(), weight_decay=1e-4)  # docs/model.md §8
    model.train()
    times = []
    for _ in range(repeats + 1):
        start = _clock(device)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model.forward_train(images, classes), masks)["loss"].backward()
        optimizer.step()
        times.append(_clock(device) - start)
    model.eval()
    return {"batch_size": batch_size, "classes": len(classes), "seconds": statistics.median(times[1:])}


def compare_logits(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """How logits ``other`` (B×T×H×W) depart from ``reference``: the share of pixels with the same argmax over
    classes, the median and the largest absolute logit difference (the latter relative to the largest
    reference logit), and the median margin between the reference's two best classes (an argmax flips where
    the difference exceeds the margin)."""
    reference, other = reference.float(), other.float()
    result = {
        "argmax_agreement": (reference.argmax(dim=1) == other.argmax(dim=1)).float().mean().item(),
        "median_logit_error": (other - reference).abs().median().item(),
        "max_relative_error": ((other - reference).abs().max() / reference.abs().max()).item(),
    }
    if reference.shape[1] > 1:
        best = reference.topk(2, dim=1).values
        result["median_margin"] = (best[:, 0] - best[:, 1]).median().item()
    return result


def machine(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: the CPU's model name and its bf16 instructions (``cpu_bf16``:
    avx512_bf16, amx_bf16 as /proc/cpuinfo lists them), whether ``device`` has native bf16, threads, torch."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first processor's
    cpu = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    info = {
        "cpu": cpu,
        "cpu_bf16": [f for f in ("avx512_bf16", "amx_bf16") if f in flags],
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        "native_bf16": has_native_bf16(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        info["load_average"] = list(os.getloadavg())
    return info
