"""Peak memory and time of ``aeroseg predict`` on synthetic GeoTIFFs of growing size.

    python benchmarks/bench_predict_memory.py                      # 2,000², 8,000², 16,000², stand-in
    python benchmarks/bench_predict_memory.py --sizes 2000 4000 --model tiny

Each size runs in a fresh process, so its peak resident memory (``ru_maxrss``) is its own; ``base`` is the
resident memory after the imports and the model load, before the prediction. With memory that depends on
the window and not on the scene, ``peak - base`` stays flat while the time grows with the area. (glibc's
adaptive mmap threshold adds allocator fragmentation that varies from run to run; run with
``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment to see the live memory alone.)
``win/Mpx`` is the number of windows the model ran per megapixel, ``sliding`` that of the whole-scene
sliding window: equal, every window runs once (the stripes used to run the windows on their borders
twice, about 11% more at 16,000²).
Models: ``pixel``, a 1×1-convolution stand-in (measures the pipeline: reading, blending, writing), and
``tiny``, a tiny random AerOSeg built from the test helpers.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


class PixelModel(nn.Module):
    """Per-pixel stand-in: the class logits are a fixed 1×1 convolution of the colours."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images - 0.5

    def segment(self, feats: torch.Tensor, classes: list[str]) -> torch.Tensor:
        weight = torch.randn(len(classes), 3, 1, 1, generator=torch.Generator().manual_seed(len(classes)))
        return 6 * nn.functional.conv2d(feats, weight)  # (B, T, H, W)


def write_scene(path: Path, side: int, block: int = 64) -> None:
    """A 3-band uint8 GeoTIFF (EPSG:32633, 0.5 m) of side² pixels, written 1,024 rows at a time."""
    import rasterio
    from rasterio.transform import Affine

    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32633")
    profile.update(transform=Affine(0.5, 0, 500000, 0, -0.5, 5600000), tiled=True, compress="deflate")
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as ds:
        for top in range(0, side, 1024):
            rows = min(1024, side - top)
            coarse = rng.integers(0, 256, size=(3, rows // block + 1, side // block + 1), dtype=np.uint8)
            data = np.repeat(np.repeat(coarse, block, axis=1), block, axis=2)[:, :rows, :side]
            ds.write(data, window=rasterio.windows.Window(0, top, side, rows))


def rss_mib() -> float:
    """Current resident memory of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(scene: str, out: str, model_name: str, window: int, batch_size: int) -> dict:
    """Predict ``scene`` in this process and return the measurements."""
    import aeroseg.prediction.api
    from aeroseg.cli import main

    if model_name == "tiny":
        sys.path.insert(0, str(ROOT))
        from tests.helpers.tiny import build_tiny_model

        model = build_tiny_model().eval()
    else:
        model = PixelModel()
    aeroseg.registry.segmenter = lambda request, device: model
    encode, windows = model.encode, []
    model.encode = lambda images: windows.append(len(images)) or encode(images)  # windows computed
    base = rss_mib()
    start = time.perf_counter()
    args = ["predict", scene, "--checkpoint", "-", "--classes", "building,road,tree|forest,water", "-o", out]
    rc = main([*args, "--window", str(window), "--batch-size", str(batch_size), "--quiet", "--device", "cpu"])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"rc": rc, "seconds": seconds, "base_mib": base, "peak_mib": peak, "windows": sum(windows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 16000])
    parser.add_argument("--model", choices=["pixel", "tiny"], default="pixel")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--child", nargs=2, metavar=("SCENE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.model, args.window, args.batch_size)))
        return
    print(f"model={args.model} window={args.window} batch={args.batch_size}")
    from aeroseg.windows import window_starts

    print(
        f"{'side':>7} {'Mpx':>6} {'seconds':>8} {'s/Mpx':>6} {'base MiB':>9} {'peak MiB':>9} {'peak-base':>9}"
        f" {'win/Mpx':>8} {'sliding':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="aeroseg-bench-") as tmp:
        for side in args.sizes:
            scene = Path(tmp) / f"scene_{side}.tif"
            write_scene(scene, side)
            command = [sys.executable, __file__, "--child", str(scene), str(Path(tmp) / f"out_{side}")]
            command += [
                "--model",
                args.model,
                "--window",
                str(args.window),
                "--batch-size",
                str(args.batch_size),
            ]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            mpx = side * side / 1e6
            print(
                f"{side:>7} {mpx:>6.0f} {result['seconds']:>8.1f} {result['seconds'] / mpx:>6.2f} "
                f"{result['base_mib']:>9.0f} {result['peak_mib']:>9.0f} {result['peak_mib'] - result['base_mib']:>9.0f}"
                f" {result['windows'] / mpx:>8.1f} {len(window_starts(side, args.window, 0.25)) ** 2 / mpx:>8.1f}"
            )
            scene.unlink()


if __name__ == "__main__":
    main()
