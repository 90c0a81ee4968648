"""Time and peak memory of the training-free presets per 512×512 window (random weights at paper size,
built offline), each preset in a fresh process so that its peak resident memory is its own.

For each preset: parameters, build seconds, then on one 512² window with 10 classes: ``encode`` seconds
(the class-independent part, once per window), ``segment`` seconds (per class list; again with its text
embeddings cached), a second full forward, the peak resident memory of the process; with ``--raster``,
``predict``'s tiling (``sliding_window_scores``, overlap 0.25, one window a batch) on the top-left
``--region`` of a GeoTIFF: windows per second and megapixels per second.

    python benchmarks/training_free.py                    # → benchmarks/results/training_free.json
    python benchmarks/training_free.py --presets segearth-ov --window 256 --json /tmp/tf.json
    python benchmarks/training_free.py --raster scene.tif --region 512,1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import rasterio
import torch
from rasterio.windows import Window

from aeroseg.cli.bench import build_model, class_names, machine, write_json
from aeroseg.inference import sliding_window_scores
from aeroseg.registry import untrained_presets
from aeroseg.windows import window_starts

RESULTS = Path(__file__).resolve().parent / "results" / "training_free.json"


def measure_raster(model: torch.nn.Module, path: Path, region: tuple[int, int], classes: list[str]) -> dict:
    """``predict``'s tiling of the top-left ``region`` (rows, cols) of the GeoTIFF ``path`` (bands 1-3)."""
    with rasterio.open(path) as src:
        pixels = src.read([1, 2, 3], window=Window(0, 0, region[1], region[0]))
    image = torch.from_numpy(pixels).float() / 255
    rows, cols = image.shape[-2:]
    windows = len(window_starts(rows, model.window, 0.25)) * len(window_starts(cols, model.window, 0.25))
    start = time.perf_counter()
    with torch.no_grad():
        sliding_window_scores(model, image, classes, window=model.window, overlap=0.25, batch_size=1)
    seconds = time.perf_counter() - start
    return {
        "raster": path.name,
        "region": [rows, cols],
        "windows": windows,
        "seconds": seconds,
        "windows_per_second": windows / seconds,
        "megapixels_per_second": rows * cols / 1e6 / seconds,
    }


def measure(preset: str, window: int, num_classes: int, raster: Path | None, region: tuple[int, int]) -> dict:
    """Build ``preset`` and time one window (and the raster) in this process."""
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
        start = time.perf_counter()
        model.segment(feats, classes)  # the class list's text embeddings cached
        cached = time.perf_counter() - start
        del feats
        start = time.perf_counter()
        model(images, classes)
        second = time.perf_counter() - start
    assert logits.shape == (1, num_classes, window, window)
    result = {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "build_seconds": build_seconds,
        "encode_seconds": encode,
        "segment_seconds": segment,
        "segment_seconds_text_cached": cached,
        "forward_seconds_second_run": second,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if raster is not None:
        result["predict"] = measure_raster(model, raster, region, classes)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=untrained_presets())
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--raster", type=Path, help="also time predict's tiling on this GeoTIFF")
    parser.add_argument("--region", default="512,512", help="ROWS,COLS of the raster's top-left corner")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one preset, print JSON
    args = parser.parse_args()
    region = tuple(int(v) for v in args.region.split(","))
    if args.one:
        print(json.dumps(measure(args.one, args.window, args.classes, args.raster, region)))
        return 0
    rows = {}
    for preset in args.presets:
        command = [sys.executable, __file__, "--one", preset, "--window", str(args.window)]
        command += ["--classes", str(args.classes), "--region", args.region]
        command += ["--raster", str(args.raster)] if args.raster else []
        done = subprocess.run(command, capture_output=True, text=True)
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
        if "predict" in r:
            p = r["predict"]
            print(
                f"{'':<14} predict {p['windows']} windows: {p['windows_per_second']:.4f} windows/s, "
                f"{p['megapixels_per_second']:.4f} MP/s",
                flush=True,
            )
    report = {"machine": machine(torch.device("cpu")), "window": args.window, "classes": args.classes}
    write_json({**report, "precision": "fp32", "presets": rows}, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
