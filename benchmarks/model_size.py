"""The model's size, speed and memory, preset by preset, at paper size (random weights, built offline).

Every preset runs in a fresh process, so that its peak resident memory is its own. For each: parameters
(total and trainable), weights in MiB, build seconds, and one forward pass (the first: nothing is warm) of one
512×512 image with 10 classes: seconds, FLOPs counted by FlopCounterMode, peak tensor memory of the pass and
peak resident memory of the process.

    python benchmarks/model_size.py                       # all presets → benchmarks/results/model_size.json
    python benchmarks/model_size.py --presets aeroseg baseline --json /tmp/size.json
    python benchmarks/model_size.py --presets sed san scan cat-seg aeroseg --update   # re-measure some rows

Each row records the machine and its load average when it was measured (``--update`` keeps the other rows
of the file, measured at other times).
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

from aeroseg.cli.bench import write_json
from aeroseg.measure import build_model, class_names, count_forward, machine
from aeroseg.registry import presets

RESULTS = Path(__file__).resolve().parent / "results" / "model_size.json"


def measure(preset: str, image_size: int, num_classes: int, short: bool) -> dict:
    """Size and one forward of ``preset`` in this process."""
    start = time.perf_counter()
    model = build_model(preset, short).eval()
    build_seconds = time.perf_counter() - start
    params = list(model.parameters())
    images = torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    counted, logits = count_forward(model, images, class_names(num_classes))
    seconds = time.perf_counter() - start
    assert logits.shape == (1, num_classes, image_size, image_size)
    return {
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "weights_mib": sum(p.numel() * p.element_size() for p in params) / 2**20,
        "build_seconds": build_seconds,
        "forward_seconds": seconds,
        "gflop": counted["gflop"],
        "peak_tensor_mib": counted["peak_mib"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": machine(torch.device("cpu")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=presets(), help="presets to measure (default: all)")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--short", action="store_true", help="tiny models (a check of this script)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--update", action="store_true", help="keep the rows of --json of other presets")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: measure one preset, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.image_size, args.classes, args.short)))
        return 0
    rows = {}
    if args.update and args.json.is_file():
        rows = json.loads(args.json.read_text())["presets"]
    for preset in args.presets:
        command = [sys.executable, __file__, "--one", preset, "--image-size", str(args.image_size)]
        command += ["--classes", str(args.classes), *(["--short"] if args.short else [])]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            rows[preset] = {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
            print(f"{preset:<24} failed: {rows[preset]['error']}", flush=True)
            continue
        rows[preset] = r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{preset:<24} {r['params'] / 1e6:8.1f}M params {r['trainable'] / 1e6:7.1f}M trainable "
            f"{r['forward_seconds']:8.2f} s {r['gflop']:9.1f} GFLOP {r['peak_rss_mib']:8.0f} MiB RSS",
            flush=True,
        )
    report = {
        "image_size": args.image_size,
        "classes": args.classes,
        "short": args.short,
        "machine": machine(torch.device("cpu")),
        "presets": rows,
    }
    write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
