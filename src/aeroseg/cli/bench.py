"""``aeroseg bench``: how fast a preset runs here, measured against this machine's own matrix-multiply peak.

One run measures, on the paper-size architecture built offline with random weights (``--short``: a tiny model
built in memory, for CI):

- the device's matrix-multiply peak in fp32, and in bf16 where the device has native bf16 (``torch.matmul`` on
  large square matrices);
- per window, for every component (AerOSeg: CLIP over the rotations, text encoder, guidance encoder,
  correlation, refinement, decoder; the training-free presets: CLIP, text, SimFeatUp, SAM / SAM 3's encoder,
  SAM 3's detector with its time per prompt, the fusion or upsampling) and in total: the FLOPs counted by
  ``FlopCounterMode``, the median time, the peak memory of the tensors it creates, and so the fraction of
  the peak it reaches;
- the same forward under bf16 autocast, where the device has native bf16 (AVX512-BF16 or AMX, a GPU from
  Ampere on; elsewhere one line says so and only fp32 is measured): its speed-up, each component's time and
  fraction of the bf16 peak, and the share of pixels that keep the fp32 argmax;
- ``predict`` throughput on a raster (``sliding_window_scores``) in megapixels per second;
- one training step (forward_train + AerOSegLoss + backward + AdamW step), for the models that train.

The instruments and measurements live in :mod:`aeroseg.measure`. Works on any device (``--device``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import partial
from pathlib import Path
from typing import Any

import torch

from aeroseg.atomic import write_text
from aeroseg.cli import options
from aeroseg.device import resolve_device
from aeroseg.errors import UserError
from aeroseg.measure import (
    MIB,
    build_model,
    class_names,
    compare_logits,
    compile_blocks,
    count_forward,
    gemm_peak,
    machine,
    measure_predict,
    measure_train_step,
    sustained_gemm,
    time_forward,
    timed_forward,
)
from aeroseg.progress import progress

PARTS = ("bf16", "predict", "train")  # what --skip can leave out
PER_CROP = ("simfeatup",)  # components called once per crop (SegEarth-OV's SimFeatUp), not once a forward


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default="aeroseg", metavar="NAME", help="model preset (`aeroseg presets`)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results to FILE")
    parser.add_argument("--short", action="store_true", help="tiny model built in memory (seconds, for CI)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: torch's)")
    parser.add_argument("--image-size", type=int, metavar="N", help="window side (default 512; --short 64)")
    parser.add_argument("--classes", type=int, default=10, metavar="T", help="number of classes (default 10)")
    parser.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="windows per batch in predict and training"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, metavar="N", help="timed runs per measurement; medians reported"
    )
    parser.add_argument("--bf16-repeats", type=int, metavar="N", help="timed bf16 runs (default: --repeats)")
    parser.add_argument(
        "--raster", type=int, metavar="N", help="predict raster side (default: two windows wide)"
    )
    options.add_device(parser)
    parser.add_argument("--compile", action="store_true", help="torch.compile every transformer block first")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS)}")
    options.add_quiet(parser)


# ------------------------------------------------------------------------------------------------ command
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
    device = resolve_device(args.device)
    size = args.image_size or (64 if args.short else 512)
    classes = class_names(args.classes)
    steps = ["build", "peak", "count", "fp32", *(p for p in PARTS if p not in skip)]
    bar = progress(total=len(steps), desc="bench", disable=args.quiet, leave=False)

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    model = build_model(args.preset, args.short).to(device).eval()
    params = {"total": sum(p.numel() for p in model.parameters())}
    params["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    step("build")
    max_n, repeats = (512, 1) if args.short else (4096, 5)
    info = machine(device)
    bf16 = "bf16" not in skip and info["native_bf16"]  # emulated bf16 is slower than fp32: not measured
    fp32_peaks = [gemm_peak(device, torch.float32, max_n=max_n, repeats=repeats)]
    peak = {"bf16": gemm_peak(device, torch.bfloat16, max_n=max_n, repeats=repeats)} if bf16 else {}
    step("peak")
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    counted, eager_logits = count_forward(model, images, classes)  # also warms the eager model up
    step("count")
    compile_seconds = None
    if args.compile:
        compile_blocks(model)
        _, compile_seconds, _ = timed_forward(model, images, classes, "fp32", counting=False)  # compiles
    probe = partial(
        sustained_gemm, device, seconds=0.05 if args.short else 1.0, n=256 if args.short else 2048
    )
    fp32, logits = time_forward(
        model, images, classes, precision="fp32", repeats=args.repeats, warmup=False, probe=probe
    )
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
        "machine": info,
        "native_bf16": info["native_bf16"],
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
    # each run against the product rate the cores sustained around it (shared hosts drift; see sustained_gemm)
    report["gemm_sustained_gflops"] = fp32["beside"]
    report["fraction_of_sustained_gemm"] = statistics.median(
        report["gflop"] / seconds / rate for seconds, rate in zip(fp32["runs"], fp32["beside"], strict=True)
    )
    components = {}
    for name, c in counted["components"].items():
        seconds = fp32["components"][name]["seconds"]
        rate = c["gflop"] / seconds if seconds > 0 else 0.0
        components[name] = {**c, "seconds": seconds, "gflops": rate, "fraction_of_peak": rate / peak["fp32"]}
    if "detector" in components:  # SAM 3's detector: all prompts in one batched pass
        components["detector"]["seconds_per_prompt"] = components["detector"]["seconds"] / len(classes)
    report["components"] = components
    once = (c["calls"] == 1 for n, c in components.items() if n not in ("other", *PER_CROP))
    report["checks"] = {"components_called_once": all(once)}
    if hasattr(model, "forward_train"):
        report["checks"]["clip_batch"] = len(model.config.rotations) * images.shape[0]
    if args.compile:  # inductor may reorder sums; the results must stay those of the eager model
        report["compile_logits"] = compare_logits(eager_logits, logits)
    if "bf16" not in skip and not bf16:
        report["bf16_not_measured"] = (
            f"bf16: not measured: {info['cpu'] if device.type == 'cpu' else device} has no native bf16 "
            "(emulated, slower than fp32; --precision auto uses fp32 here)"
        )
        step("bf16")
    if bf16:
        bf16_run, logits_bf16 = time_forward(
            model,
            images,
            classes,
            precision="bf16",
            repeats=args.bf16_repeats or args.repeats,
            warmup=args.compile,
        )
        report["bf16"] = bf16_run
        report["bf16_speedup"] = fp32["seconds"] / bf16_run["seconds"]
        report["bf16_fraction_of_peak"] = report["gflop"] / bf16_run["seconds"] / peak["bf16"]
        for name, c in components.items():
            seconds = bf16_run["components"][name]["seconds"]
            c["bf16_seconds"] = seconds
            c["bf16_fraction_of_peak"] = c["gflop"] / seconds / peak["bf16"] if seconds > 0 else 0.0
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
    write_text(path, json.dumps(report, indent=2) + "\n")


def format_report(r: dict[str, Any]) -> str:
    """The readable table of a bench report."""
    m, peak = r["machine"], r["gemm_peak_gflops"]
    size = "tiny model (--short)" if r["short"] else "paper size, random weights"
    lines = [
        f"aeroseg bench: preset {r['preset']} ({size}), {r['image_size']}² window, T={r['classes']} classes, "
        f"{r['params']['total'] / 1e6:.1f}M parameters ({r['params']['trainable'] / 1e6:.1f}M trainable)",
        f"machine: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, device {m['device']} "
        f"(bf16 {'native' if m['native_bf16'] else 'emulated'})",
        f"matmul peak: fp32 {peak['fp32']:.1f} GFLOP/s"
        + (f", bf16 {peak['bf16']:.1f} GFLOP/s" if "bf16" in peak else ""),
        "",
        f"{'component':<12}{'GFLOP':>10}{'fp32 s':>10}{'GFLOP/s':>10}{'% peak':>8}{'peak MiB':>10}"
        + (f"{'bf16 s':>10}{'% bf16':>8}" if "bf16" in r else ""),
    ]
    rows = [*r["components"].items(), ("total", {**r, "gflops": r["gflop"] / r["seconds"]})]
    for name, c in rows:
        label = (
            f"clip ×{r['checks']['clip_batch']}" if name == "clip" and "clip_batch" in r["checks"] else name
        )
        memory = f"{c['peak_mib']:>10.1f}" if "peak_mib" in c else f"{'':>10}"
        line = f"{label:<12}{c['gflop']:>10.2f}{c['seconds']:>10.3f}{c['gflops']:>10.1f}"
        line += f"{100 * c['gflops'] / peak['fp32']:>8.1f}{memory}"
        if "bf16" in r:
            seconds = (r["bf16"] if name == "total" else r["bf16"]["components"][name])["seconds"]
            fraction = c["gflop"] / seconds / peak["bf16"] if seconds > 0 else 0.0
            line += f"{seconds:>10.3f}{100 * fraction:>8.1f}"
        lines.append(line)
    lines.append(
        f"fraction of the fp32 peak: {r['fraction_of_peak']:.1%} (best run {r['fraction_of_peak_best']:.1%}); "
        f"of the fp32 product rate sustained around each run: {r['fraction_of_sustained_gemm']:.1%} (median)"
    )
    if r["compile"]:
        lines.append(
            f"torch.compile: {r['compile_seconds']:.1f} s to compile; largest logit difference to eager "
            f"{r['compile_logits']['max_relative_error']:.1e} (relative)"
        )
    if "bf16_not_measured" in r:
        lines.append(r["bf16_not_measured"])
    if "bf16" in r:
        lines.append(
            f"bf16 autocast: {r['bf16_speedup']:.2f}× the fp32 speed, {r['bf16_fraction_of_peak']:.1%} of the bf16 "
            f"peak, argmax agreement {r['bf16_argmax_agreement']:.2%}"
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
