"""Throughput of ``aeroseg predict --ray`` with 1 and 2 workers against the single-process predictor.

    python benchmarks/bench_ray.py                       # 3 scenes of 1,024² and one of 2,048² (split in units)
    python benchmarks/bench_ray.py --side 1024 --big 2048 --rounds 3 --out benchmarks/results/ray_cpu.json

The same inputs go through ``aeroseg predict`` in this process (one torch thread) and on a local Ray
cluster with 1, then 2, one-thread CPU workers, each Ray run alternating with a single-process run (the
machine may be shared; the medians are kept). The workers are started before their timed runs (the
first run, start-up and model load included, is reported apart as ``worker_start_s``); the start-up of
one worker is broken down by a probe actor: Ray's start (``ray.init``), the worker process (from the
request to the actor's first line), the imports (torch, rasterio, aeroseg) and the model's load. Megapixels
per second count input pixels. The overhead per unit is the extra time of the 1-worker run over the single
process, divided by its units (the workers write the outputs; a unit of a scene of several recomputes the
window rows above it that cover its first pixel rows). The windows per megapixel are the windows the model
ran, against the count of the former stripes, which ran the windows on a stripe border twice. The
projection for N workers is computed from the measured figures and kept apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from aeroseg.measure import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CLASSES = "building,road,tree|forest,water"


def former_window_runs(side: int, window: int, overlap: float, stripe: int = 4096) -> int:
    """Windows the predictor ran before every window ran once (those on a stripe border ran twice)."""
    from aeroseg.windows import window_starts

    xs = window_starts(side, window, overlap)
    per_row = sum(
        len([x for x in xs if x < min(c0 + stripe, side) and x + window > c0])
        for c0 in range(0, side, stripe)
    )
    return per_row * len(window_starts(side, window, overlap))


def worker_start_up(ray, checkpoint: str) -> dict:
    """Seconds of a worker's start-up, measured by a probe actor on one CPU: process, imports, model."""

    @ray.remote(num_cpus=1)
    class Probe:
        def __init__(self) -> None:
            self.born = time.time()

        def load(self) -> tuple[float, float, float]:
            t0 = time.perf_counter()
            import aeroseg.distributed.runner  # noqa: F401 (torch, rasterio, ray's side of aeroseg)
            from aeroseg.registry import ModelRequest, segmenter

            t1 = time.perf_counter()
            segmenter(ModelRequest(checkpoint=checkpoint), "cpu")
            return self.born, t1 - t0, time.perf_counter() - t1

    asked = time.time()
    probe = Probe.remote()
    born, imports, model = ray.get(probe.load.remote())
    ray.kill(probe)
    return {"process_s": born - asked, "imports_s": imports, "model_load_s": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1024, help="side of the small scenes")
    parser.add_argument("--scenes", type=int, default=3, help="number of small scenes")
    parser.add_argument("--big", type=int, default=2048, help="side of the scene split into units")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--unit-rows", type=int, default=2, help="window rows per unit of the big scene")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="JSON file of the results")
    parser.add_argument("--note", default="", help="free text stored with the results (e.g. shared cores)")
    args = parser.parse_args()

    import ray
    from bench_predict_memory import write_scene

    from aeroseg.cli import main as aeroseg_main
    from aeroseg.prediction.streaming import WindowOptions, count_windows
    from tests.helpers.tiny import build_tiny_model

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="aeroseg-bench-ray-") as tmp:
        root = Path(tmp)
        checkpoint = root / "ckpt"
        build_tiny_model().save_pretrained(checkpoint)
        scenes = root / "in"
        scenes.mkdir()
        for i in range(args.scenes):
            write_scene(scenes / f"small_{i}.tif", args.side)
        write_scene(scenes / "big.tif", args.big)
        sides = [args.side] * args.scenes + [args.big]
        megapixels = sum(s * s for s in sides) / 1e6
        options = WindowOptions(window=args.window)
        windows = sum(count_windows(s, s, options) for s in sides)
        common = [str(scenes), "--checkpoint", str(checkpoint), "--classes", CLASSES, "--quiet"]
        common += ["--window", str(args.window), "--device", "cpu"]
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="aeroseg")
        breakdown = {"ray_init_s": time.perf_counter() - t0, **worker_start_up(ray, str(checkpoint))}

        def run(kind: str, n: int) -> tuple[float, int]:
            out = root / f"out_{kind}_{n}_{time.monotonic_ns()}"
            extra = [] if kind == "single" else ["--ray", "--ray-threads", "1", "--ray-workers", str(n)]
            extra += ["--ray-unit-rows", str(args.unit_rows)] if kind == "ray" else []
            summary = root / "summary.json"
            start = time.perf_counter()
            rc = aeroseg_main(["predict", *common, "-o", str(out), *extra, "--json", str(summary)])
            seconds = time.perf_counter() - start
            assert rc == 0, f"{kind} run failed"
            units = sum(r.get("units", 1) for r in json.loads(summary.read_text())["images"])
            return seconds, units

        start: dict[int, float] = {}
        times: dict[str, list[float]] = {"single": [], "ray_1": [], "ray_2": []}
        units = 0
        for n in (1, 2):  # one pool of workers at a time (they hold the CPUs); its start-up is not timed
            t0 = time.perf_counter()
            run("ray", n)
            start[n] = time.perf_counter() - t0
            for _ in range(args.rounds):  # alternate with the single process: the machine may be shared
                times["single"].append(run("single", 1)[0])
                seconds, units = run("ray", n)
                times[f"ray_{n}"].append(seconds)
                print({k: round(v[-1], 2) for k, v in times.items() if v}, flush=True)
        ray.shutdown()
    median = {k: statistics.median(v) for k, v in times.items()}
    measured = {
        "megapixels": megapixels,
        "windows": windows,
        "units_per_run": units,
        "seconds_median": median,
        "seconds_all": times,
        "megapixels_per_s": {k: megapixels / v for k, v in median.items()},
        "windows_per_s": {k: windows / v for k, v in median.items()},
        "speedup_2_workers_over_1": median["ray_1"] / median["ray_2"],
        "ray_overhead_per_unit_s": (median["ray_1"] - median["single"]) / units,
        "worker_start_s": start,
        "worker_start_up_breakdown_s": breakdown,
        "windows_per_megapixel": {
            f"{s}²": {
                "now": count_windows(s, s, WindowOptions()) / (s * s / 1e6),
                "former_stripes": former_window_runs(s, 512, 0.25) / (s * s / 1e6),
            }
            for s in (2000, 8000, 16000)
        },
    }
    per_worker = measured["megapixels_per_s"]["ray_1"]
    projected = {
        "model": "N workers run units in parallel at the measured 1-worker rate, each writing its own "
        "outputs; the driver only plans and tracks (benchmarks/ray_scale.py measures the orchestration's "
        "efficiency E(N) and the driver's CPU): MP/s(N) = E(N) · N · r1",
        "r1_megapixels_per_s": per_worker,
        "caveat": "with GPU workers r1 is the per-GPU rate of the real model (not measured here), far above "
        "this CPU rate of a tiny model",
    }
    result = {
        "machine": machine(torch.device("cpu")),
        "note": args.note,
        "settings": vars(args),
        "measured": measured,
        "projected": projected,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
