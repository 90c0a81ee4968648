"""Time and peak memory of the training-free presets per 512×512 window (random weights at paper size,
built offline), each preset in a fresh process so that its peak resident memory is its own.

For each preset: parameters, build seconds, then on one 512² window with 10 classes: ``encode``
seconds (the class-independent part, once per window), ``segment`` seconds (per class list), a second full
forward, the peak resident memory of the process and the peak tensor memory of the forward (CPU).

    python benchmarks/training_free.py                    # → benchmarks/results/training_free.json
    python benchmarks/training_free.py --presets segearth-ov --window 256 --json /tmp/tf.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from aeroseg.cli.bench import build_model, class_names, machine, write_json
from aeroseg.registry import untrained_presets

RESULTS = Path(__file__).resolve().parent / "results" / "training_free.json"


def measure(preset: str, window: int, num_classes: int) -> dict:
    """Build ``preset`` and time one window in this process."""
    start = time.perf_counter()
    model = build_model(preset, short=False).eval()
    build_seconds = time.perf_counter() - start
    images = torch.rand(1, 3, window, window, generator=torch.Generator().manual_seed(0))
    classes = class_names(num_classes)
    with torch.no_grad():
        start = time.perf_counter()
        feats = model.encode(images)
        encode = time.perf_counter() - start
        start = time.perf_counter()
        logits = model.segment(feats, classes)
        segment = time.perf_counter() - start
        del feats
        start = time.perf_counter()
        model(images, classes)
        second = time.perf_counter() - start
    assert logits.shape == (1, num_classes, window, window)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "build_seconds": build_seconds,
        "encode_seconds": encode,
        "segment_seconds": segment,
        "forward_seconds_second_run": second,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=untrained_presets())
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one preset, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.window, args.classes)))
        return 0
    rows = {}
    for preset in args.presets:
        command = [sys.executable, __file__, "--one", preset, "--window", str(args.window)]
        done = subprocess.run([*command, "--classes", str(args.classes)], capture_output=True, text=True)
        if done.returncode:
            rows[preset] = {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
            print(f"{preset:<14} failed: {rows[preset]['error']}", flush=True)
            continue
        rows[preset] = r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{preset:<14} {r['params'] / 1e6:7.1f}M params  encode {r['encode_seconds']:7.2f} s  segment "
            f"{r['segment_seconds']:7.2f} s  forward {r['forward_seconds_second_run']:7.2f} s  "
            f"{r['peak_rss_mib']:7.0f} MiB RSS",
            flush=True,
        )
    report = {"machine": machine(torch.device("cpu")), "window": args.window, "classes": args.classes}
    write_json({**report, "precision": "fp32", "presets": rows}, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
