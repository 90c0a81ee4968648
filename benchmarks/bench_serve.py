"""``aeroseg serve``: first segmentation of a view against a re-segmentation with a new class list, and the
server's memory over many views.

    python benchmarks/bench_serve.py --json benchmarks/results/serve_training_free.json
    python benchmarks/bench_serve.py --guidance none --views 20 --json benchmarks/results/serve_clip_only.json

The server's application runs in this process (FastAPI's test client speaks HTTP to it), on the
training-free model (the default of ``aeroseg serve``) built with random weights at its real size
(``pretrained=False``: the time does not depend on the weights). A 3-band uint8 GeoTIFF of ``--raster``²
pixels is written to a temporary folder. Timed, from the request to the finished run:

- ``first``: a ``--view``² view with 4 classes (image encoders and class part);
- ``again``: the same view with another 4 classes (features from the cache), run ``--repeats`` times with
  a new class list each time.

Then ``--views`` different views of ``--memory-view``² pixels (a fresh image region each, so every one
encodes) are segmented and the process's resident memory (VmRSS) is recorded after each, with the
feature cache's size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from fastapi.testclient import TestClient
from rasterio.transform import Affine

from aeroseg import build
from aeroseg.prediction.streaming import WindowOptions
from aeroseg.serve.app import create_app
from aeroseg.serve.catalog import Catalog
from aeroseg.serve.files import FileAccess
from aeroseg.serve.jobs import JobRunner
from aeroseg.serve.limits import Limits
from aeroseg.serve.security import Guard

CLASS_LISTS = [
    "building,road,tree,water",
    "car,ship,field,bridge",
    "roof,parking lot,grass,river",
    "harbor,airplane,forest,sand",
    "greenhouse,solar panel,pond,path",
]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def memory_mb() -> dict[str, float]:
    status = Path("/proc/self/status").read_text().splitlines()
    values = {line.split(":")[0]: float(line.split()[1]) / 1024 for line in status if line.startswith("Vm")}
    return {"rss_mb": round(values["VmRSS"], 1), "peak_rss_mb": round(values["VmHWM"], 1)}


def write_scene(path: Path, side: int) -> str:
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(3, side // 32 + 1, side // 32 + 1))
    data = np.repeat(np.repeat(coarse, 32, axis=1), 32, axis=2)[:, :side, :side].astype(np.uint8)
    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(
        path, "w", **profile, transform=Affine(0.5, 0, 500000, 0, -0.5, 5600000), tiled=True
    ) as ds:
        ds.write(data)
    return str(path)


def pixel_bounds(info: dict, col: int, row: int, size: int) -> list[float]:
    """Map bounds (south, west, north, east) of the pixel square at (col, row), slightly inside it."""
    south, west, north, east = info["bounds"]
    dx, dy = (east - west) / info["width"], (north - south) / info["height"]
    return [
        north - (row + size - 1) * dy,
        west + (col + 1) * dx,
        north - (row + 1) * dy,
        west + (col + size - 1) * dx,
    ]


def segment(client: TestClient, raster: str, bounds: list[float], classes: str) -> tuple[float, dict]:
    start = time.perf_counter()
    job = client.post(
        "/api/segment", json={"raster": raster, "classes": classes, "scope": "view", "bounds": bounds}
    )
    job.raise_for_status()
    job = job.json()
    while job["status"] in ("queued", "running"):
        time.sleep(0.02)
        job = client.get(f"/api/jobs/{job['id']}").json()
    if job["status"] != "done":
        raise RuntimeError(job["error"])
    return time.perf_counter() - start, job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guidance", default="sam", help="sam (default: SAM ViT-B, as the preset) or none")
    parser.add_argument("--raster", type=int, default=3072, help="side of the test GeoTIFF")
    parser.add_argument("--view", type=int, default=1024, help="side of the timed view")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="re-segmentations of the view")
    parser.add_argument("--views", type=int, default=0, help="different views for the memory curve")
    parser.add_argument("--memory-view", type=int, default=512, help="side of those views")
    parser.add_argument("--cache-mb", type=float, default=2048, help="as aeroseg serve --cache-mb")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    guidance = None if args.guidance == "none" else "facebook/sam-vit-base"
    model = build("training-free", guidance=guidance or "none", pretrained=False).eval()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    (work / "uploads").mkdir()
    write_scene(work / "scene.tif", args.raster)
    catalog = Catalog(
        FileAccess([work], work / "uploads"), lambda name: model, cache_bytes=int(args.cache_mb * 2**20)
    )
    runner = JobRunner(work, WindowOptions(window=args.window), torch.device("cpu"), "fp32", max_active=8)
    guard = Guard.for_address("127.0.0.1", "bench-serve-token-0123456789")
    app = create_app(
        catalog,
        runner,
        guard=guard,
        limits=Limits(),
        model_label="training-free (random weights)",
        presets=[],
    )
    client = TestClient(app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {guard.token}"})
    info = client.post("/api/open", json={"path": "scene.tif"}).json()
    result: dict = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores shared with other "
        f"people's work (load average {os.getloadavg()[0]:.1f} at the start), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "model": f"training-free, guidance {'SAM ViT-B' if guidance else 'none'}, random weights",
        "window": args.window,
        "view": args.view,
        "after_load": memory_mb(),
    }
    bounds = pixel_bounds(info, 0, 0, args.view)
    first, job = segment(client, info["id"], bounds, CLASS_LISTS[0])
    print(f"first {first:.1f} s, {job['total']} windows", flush=True)
    again = []
    for classes in CLASS_LISTS[1 : 1 + args.repeats]:
        seconds, job = segment(client, info["id"], bounds, classes)
        again.append(round(seconds, 2))
        print(f"again {seconds:.2f} s ({job['cache_hits']} cached batches)", flush=True)
    result.update(
        view_pixels=job["window"][2:],
        windows=job["total"],
        first_s=round(first, 2),
        again_s=again,
        again_over_first=round(min(again) / first, 4) if again else None,
        goal="again < 5% of first",
    )
    cache = catalog.cache("default", info["id"])
    curve = []
    side = args.memory_view
    fresh = [  # squares of the grid outside the timed view
        (col, row)
        for row in range(0, args.raster - side + 1, side)
        for col in range(0, args.raster - side + 1, side)
        if not (col < args.view and row < args.view)
    ]
    if len(fresh) < args.views:
        raise SystemExit(f"--raster {args.raster} holds only {len(fresh)} fresh views of {side}²")
    for i, (col, row) in enumerate(fresh[: args.views]):
        bounds = pixel_bounds(info, col, row, side)
        seconds, _ = segment(client, info["id"], bounds, CLASS_LISTS[i % len(CLASS_LISTS)])
        curve.append(
            {
                "view": i + 1,
                "seconds": round(seconds, 1),
                **memory_mb(),
                "cache_mb": round(cache.held_bytes / 2**20, 1),
            }
        )
        print(curve[-1], flush=True)
    if curve:
        result.update(
            memory_view=side, memory=curve, cache_window_mb=round((cache.window_bytes or 0) / 2**20, 2)
        )
    runner.close(wait=3)
    catalog.close()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
