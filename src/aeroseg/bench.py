"""``aeroseg bench``: how fast a preset runs here, measured against this machine's own matrix-multiply peak.

One run measures, on the paper-size architecture built offline with random weights (``--short``: a tiny model
built in memory, for CI):

- the device's matrix-multiply peak in fp32 and bf16 (``torch.matmul`` on large square matrices);
- per window, for every component (CLIP over the rotations, text encoder, guidance encoder, correlation,
  refinement, decoder) and in total: the FLOPs counted by ``FlopCounterMode``, the median time, the peak
  memory of the tensors it creates, and so the fraction of the peak it reaches;
- the same forward under bf16 autocast: its speed-up and the share of pixels that keep the fp32 argmax;
- ``predict`` throughput on a raster (``sliding_window_scores``) in megapixels per second;
- one training step (forward_train + AerOSegLoss + backward + AdamW step).

Components are timed inside the model's own forward (their methods are wrapped while a measurement runs),
so the code measured is the code that predict and evaluate run. Works on any device (``--device``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
from tqdm import tqdm

from aeroseg.errors import UserError
from aeroseg.modeling.precision import autocast, has_native_bf16

COMPONENTS = ("clip", "text", "guidance", "correlation", "refinement", "decoder")
PARTS = ("bf16", "predict", "train")  # what --skip can leave out
MIB = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="aeroseg", help="model preset (default: aeroseg)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results to FILE")
    parser.add_argument("--short", action="store_true", help="tiny model built in memory (seconds, for CI)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: torch's)")
    parser.add_argument("--image-size", type=int, metavar="N", help="window side (default 512; --short 64)")
    parser.add_argument("--classes", type=int, default=10, metavar="T", help="number of classes (default 10)")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per batch in predict and training")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; medians reported")
    parser.add_argument("--bf16-repeats", type=int, metavar="N", help="timed bf16 runs (default: --repeats)")
    parser.add_argument(
        "--raster", type=int, metavar="N", help="predict raster side (default: two windows wide)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every transformer block first")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS)}")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# ------------------------------------------------------------------------------------------ what runs
def class_names(count: int) -> list[str]:
    """``count`` distinct class names: the benchmarks' own (iSAID, DLRSD, OpenEarthMap), then "object N"."""
    from aeroseg.data.info import BUILTIN, builtin_split

    names = list(dict.fromkeys(name for dataset in BUILTIN for name in builtin_split(dataset)[0].classes))
    return (names + [f"object {i}" for i in range(len(names), count)])[:count]


def build_model(preset: str, short: bool, seed: int = 0) -> nn.Module:
    """The paper-size model of ``preset`` with random weights (offline, seeded), or its tiny version."""
    torch.manual_seed(seed)
    if short:
        from aeroseg._tiny import build_tiny

        return build_tiny(preset, seed)
    from aeroseg.presets import build

    return build(preset, pretrained=False)


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


# FlopCounterMode knows the CUDA attention kernels only; the CPU one has the same cost.
FLOP_MAPPING = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}


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
    """(component, object, method): the calls AerOSeg's forward makes, one per component. Other models (the
    training-free one) are measured as a whole."""
    from aeroseg.modeling.aeroseg import AerOSeg

    if not isinstance(model, AerOSeg):
        return []
    return [
        ("clip", model.backbone, "encode_image"),
        ("text", model.backbone, "encode_text"),
        ("guidance", model.guidance_encoder, "forward"),
        ("correlation", model.correlation, "forward"),
        ("refinement", model.refinement, "forward"),
        ("decoder", model.decoder, "forward"),
    ]


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

    for name, owner, method in targets:
        setattr(owner, method, wrap(name, getattr(owner, method)))
    try:
        with contextlib.ExitStack() as stack:
            for mode in (memory, flops):
                if mode is not None:
                    stack.enter_context(mode)
            yield {"components": records, "flops": flops, "memory": memory}
    finally:
        for _, owner, method in targets:
            delattr(owner, method)  # back to the class's method


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


def _forward(model: nn.Module, images: torch.Tensor, classes: list[str], precision: str, counting: bool):
    """One forward with a fresh class list (the text encoder runs). → logits, seconds, probe."""
    model.eval()  # also empties the text cache
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
    logits, _, p = _forward(model, images, classes, "fp32", counting=True)
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
    model: nn.Module, images: torch.Tensor, classes: list[str], *, precision: str, repeats: int, warmup: bool
) -> tuple[dict[str, Any], torch.Tensor]:
    """Median seconds of the forward and of each component over ``repeats`` runs. → (result, logits)."""
    if warmup:
        _forward(model, images, classes, precision, counting=False)
    runs = [_forward(model, images, classes, precision, counting=False) for _ in range(repeats)]
    totals = [seconds for _, seconds, _ in runs]
    components = {
        name: {"seconds": statistics.median(p["components"][name].seconds for _, _, p in runs)}
        for name in runs[0][2]["components"]
    }
    median = statistics.median(totals)
    components["other"] = {"seconds": max(0.0, median - sum(c["seconds"] for c in components.values()))}
    result = {"seconds": median, "seconds_best": min(totals), "components": components}
    return result, runs[-1][0]


def measure_predict(
    model: nn.Module, *, raster: int, window: int, classes: list[str], batch_size: int, device: torch.device
) -> dict[str, Any]:
    """Megapixels per second of ``sliding_window_scores`` on a random raster×raster image (fp32)."""
    from aeroseg.inference import sliding_window_scores, window_starts

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
    from aeroseg.losses import AerOSegLoss

    config = model.config
    if config.back_projection:  # the back-projection is built for the seen classes of training
        classes = class_names(config.back_projection_classes)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(batch_size, 3, image_size, image_size, generator=g).to(device)
    masks = torch.randint(0, len(classes), (batch_size, image_size, image_size), generator=g).to(device)
    loss_fn = AerOSegLoss(config)
    optimizer = torch.optim.AdamW(model.param_groups(), weight_decay=1e-4)  # DESIGN §7
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
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
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


# ------------------------------------------------------------------------------------------------ command
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device(torch.accelerator.current_accelerator() or "cpu")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as error:
        reason = str(error).splitlines()[0]
        raise UserError(f"device {name!r} is not usable here ({reason}); try --device cpu") from None
    return device


def _check(args: argparse.Namespace) -> set[str]:
    for flag in ("classes", "batch_size", "repeats", "bf16_repeats", "threads", "image_size", "raster"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(PARTS):
        raise UserError(f"--skip takes {', '.join(PARTS)}; got {', '.join(sorted(skip - set(PARTS)))}")
    return skip


def run(args: argparse.Namespace) -> int:
    skip = _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    size = args.image_size or (64 if args.short else 512)
    classes = class_names(args.classes)
    steps = ["build", "peak", "count", "fp32", *(p for p in PARTS if p not in skip)]
    bar = tqdm(total=len(steps), desc="bench", disable=args.quiet, leave=False)

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    model = build_model(args.preset, args.short).to(device).eval()
    params = {"total": sum(p.numel() for p in model.parameters())}
    params["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    step("build")
    max_n, repeats = (512, 1) if args.short else (4096, 5)
    fp32_peaks = [gemm_peak(device, torch.float32, max_n=max_n, repeats=repeats)]
    peak = {"bf16": gemm_peak(device, torch.bfloat16, max_n=max_n, repeats=repeats)}
    step("peak")
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    counted, eager_logits = count_forward(model, images, classes)  # also warms the eager model up
    step("count")
    compile_seconds = None
    if args.compile:
        compile_blocks(model)
        _, compile_seconds, _ = _forward(model, images, classes, "fp32", counting=False)  # compiles
    fp32, logits = time_forward(model, images, classes, precision="fp32", repeats=args.repeats, warmup=False)
    # the peak again: on a shared machine the neighbours' load changes, and the peak is the best the cores do
    fp32_peaks.append(gemm_peak(device, torch.float32, max_n=max_n, repeats=repeats))
    peak["fp32"] = max(fp32_peaks)
    step("fp32")
    report: dict[str, Any] = {
        "preset": args.preset,
        "short": args.short,
        "compile": args.compile,
        "compile_seconds": compile_seconds,
        "image_size": size,
        "classes": len(classes),
        "repeats": args.repeats,
        "params": params,
        "machine": machine(device),
        "gemm_peak_gflops": peak,
        "gemm_peak_fp32_samples": fp32_peaks,  # before and after the fp32 timing; the peak is their maximum
        "gflop": counted["gflop"],
        "seconds": fp32["seconds"],
        "seconds_best": fp32["seconds_best"],
        "peak_mib": counted["peak_mib"],
        "weights_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / MIB,
    }
    report["fraction_of_peak"] = report["gflop"] / report["seconds"] / peak["fp32"]
    report["fraction_of_peak_best"] = report["gflop"] / report["seconds_best"] / peak["fp32"]
    components = {}
    for name, c in counted["components"].items():
        seconds = fp32["components"][name]["seconds"]
        rate = c["gflop"] / seconds if seconds > 0 else 0.0
        components[name] = {**c, "seconds": seconds, "gflops": rate, "fraction_of_peak": rate / peak["fp32"]}
    report["components"] = components
    report["checks"] = {
        "components_called_once": all(c["calls"] == 1 for n, c in components.items() if n != "other"),
        "clip_batch": len(model.config.rotations) * images.shape[0],
    }
    if args.compile:  # inductor may reorder sums; the results must stay those of the eager model
        report["compile_logits"] = compare_logits(eager_logits, logits)
    if "bf16" not in skip:
        bf16, logits_bf16 = time_forward(
            model,
            images,
            classes,
            precision="bf16",
            repeats=args.bf16_repeats or args.repeats,
            warmup=args.compile,
        )
        report["bf16"] = bf16
        report["bf16_speedup"] = fp32["seconds"] / bf16["seconds"]
        difference = compare_logits(logits, logits_bf16)
        report["bf16_argmax_agreement"] = difference.pop("argmax_agreement")
        report["bf16_logits"] = difference
        step("bf16")
    if "predict" not in skip:
        raster = args.raster or 2 * size - size // 4  # two windows per side at overlap 0.25
        report["predict"] = measure_predict(
            model, raster=raster, window=size, classes=classes, batch_size=args.batch_size, device=device
        )
        step("predict")
    if "train" not in skip and hasattr(model, "forward_train"):
        report["train_step"] = measure_train_step(
            model,
            image_size=size,
            batch_size=args.batch_size,
            classes=classes,
            repeats=args.repeats,
            device=device,
        )
        step("train")
    bar.close()
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` to ``path`` through a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


def format_report(r: dict[str, Any]) -> str:
    """The readable table of a bench report."""
    m, peak = r["machine"], r["gemm_peak_gflops"]
    size = "tiny model (--short)" if r["short"] else "paper size, random weights"
    lines = [
        f"aeroseg bench: preset {r['preset']} ({size}), {r['image_size']}² window, T={r['classes']} classes, "
        f"{r['params']['total'] / 1e6:.1f}M parameters ({r['params']['trainable'] / 1e6:.1f}M trainable)",
        f"machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, device {m['device']} "
        f"(bf16 {'native' if m['native_bf16'] else 'emulated'})",
        f"matmul peak: fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s",
        "",
        f"{'component':<12}{'GFLOP':>10}{'fp32 s':>10}{'GFLOP/s':>10}{'% peak':>8}{'peak MiB':>10}"
        + (f"{'bf16 s':>10}" if "bf16" in r else ""),
    ]
    rows = [*r["components"].items(), ("total", {**r, "gflops": r["gflop"] / r["seconds"]})]
    for name, c in rows:
        label = f"clip ×{r['checks']['clip_batch']}" if name == "clip" else name
        memory = f"{c['peak_mib']:>10.1f}" if "peak_mib" in c else f"{'':>10}"
        line = f"{label:<12}{c['gflop']:>10.2f}{c['seconds']:>10.3f}{c['gflops']:>10.1f}"
        line += f"{100 * c['gflops'] / peak['fp32']:>8.1f}{memory}"
        if "bf16" in r:
            line += f"{(r['bf16'] if name == 'total' else r['bf16']['components'][name])['seconds']:>10.3f}"
        lines.append(line)
    lines.append(
        f"fraction of the fp32 peak: {r['fraction_of_peak']:.1%} (best run {r['fraction_of_peak_best']:.1%})"
    )
    if r["compile"]:
        lines.append(
            f"torch.compile: {r['compile_seconds']:.1f} s to compile; largest logit difference to eager "
            f"{r['compile_logits']['max_relative_error']:.1e} (relative)"
        )
    if "bf16" in r:
        lines.append(
            f"bf16 autocast: {r['bf16_speedup']:.2f}× the fp32 speed, argmax agreement {r['bf16_argmax_agreement']:.2%}"
        )
        d = r["bf16_logits"]
        lines.append(
            f"  median |bf16 - fp32| logit {d['median_logit_error']:.2e}; median fp32 top-2 margin "
            f"{d.get('median_margin', float('nan')):.2e}"
        )
    if "predict" in r:
        p = r["predict"]
        lines.append(
            f"predict: {p['raster']}² raster, {p['windows']} windows of {p['window']}² (overlap {p['overlap']}): "
            f"{p['seconds']:.2f} s, {p['megapixels_per_second']:.4f} MP/s"
        )
    if "train_step" in r:
        t = r["train_step"]
        lines.append(f"training step (batch {t['batch_size']}, {t['classes']} classes): {t['seconds']:.3f} s")
    return "\n".join(lines)
