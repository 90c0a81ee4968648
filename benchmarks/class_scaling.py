"""Cost of the class count at inference: T = 10, 100 and 500 classes on one window, with no cap on T
(CAT-Seg pads or truncates its class list to 256).

The image encoders run once (``encode``, as predict does for every window). For each T, the text encoder
runs once (its result is cached per class list), then ``segment`` (correlation, refinement, decoder) is timed
(median of ``--repeats``) and its FLOPs and peak tensor memory are counted. Lines a + b·T are fitted to the
times and to the FLOPs; the report gives b (per class) and the time per class at each T.

    python benchmarks/class_scaling.py                    # paper-size aeroseg → results/class_scaling.json
    python benchmarks/class_scaling.py --short --json /tmp/scaling.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from aeroseg.cli.bench import write_json
from aeroseg.measure import FLOP_MAPPING, MemoryTracker, build_model, class_names, machine

RESULTS = Path(__file__).resolve().parent / "results" / "class_scaling.json"


def scaling(model, images: torch.Tensor, counts: list[int], repeats: int) -> dict:
    model.eval()
    with torch.inference_mode():
        start = time.perf_counter()
        feats = model.encode(images)
        rows = {"encode_image_seconds": time.perf_counter() - start, "classes": {}}
        for T in counts:
            classes = class_names(T)
            start = time.perf_counter()
            model.encode_text(classes)  # cached from here on
            text_seconds = time.perf_counter() - start
            with (
                MemoryTracker() as memory,
                FlopCounterMode(display=False, custom_mapping=FLOP_MAPPING) as flops,
            ):
                logits = model.segment(feats, classes)
            assert logits.shape[1] == T, logits.shape  # every class scored: no cap, no padding
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model.segment(feats, classes)
                times.append(time.perf_counter() - start)
            rows["classes"][str(T)] = {
                "text_seconds": text_seconds,
                "segment_seconds": statistics.median(times),
                "segment_gflop": flops.get_total_flops() / 1e9,
                "segment_peak_mib": memory.peak / 2**20,
                "ms_per_class": 1e3 * statistics.median(times) / T,
            }
    ts = [float(t) for t in counts]
    seconds = [rows["classes"][str(t)]["segment_seconds"] for t in counts]
    slope, intercept = statistics.linear_regression(ts, seconds)
    rows["seconds_per_class"] = slope
    rows["seconds_fixed"] = intercept
    gflop = [rows["classes"][str(t)]["segment_gflop"] for t in counts]
    rows["gflop_per_class"] = statistics.linear_regression(ts, gflop)[0]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="aeroseg")
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--short", action="store_true", help="tiny model (a check of this script)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    model = build_model(args.preset, args.short)
    size = 64 if args.short else args.image_size
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    report = {
        "preset": args.preset,
        "short": args.short,
        "image_size": size,
        "machine": machine(images.device),
    }
    report.update(scaling(model, images, args.classes, args.repeats))
    print(f"encode (once per window): {report['encode_image_seconds']:.2f} s")
    for T, row in report["classes"].items():
        print(
            f"T={T:>4}: text {row['text_seconds']:7.2f} s (once per class list)  "
            f"segment {row['segment_seconds']:7.2f} s {row['segment_gflop']:8.1f} GFLOP  "
            f"peak {row['segment_peak_mib']:7.0f} MiB  {row['ms_per_class']:6.1f} ms per class"
        )
    print(
        f"segment = {report['seconds_fixed']:.3f} s + {report['seconds_per_class'] * 1e3:.2f} ms × T "
        f"(least squares); {report['gflop_per_class']:.2f} GFLOP per class"
    )
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
