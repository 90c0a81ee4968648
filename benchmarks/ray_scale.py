"""Scaling of the orchestration of ``aeroseg predict --ray``: 1, 2, 4, 8 and 16 workers on this machine.

    python benchmarks/ray_scale.py                                   # writes benchmarks/results/ray_scale.json
    python benchmarks/ray_scale.py --seconds 0.1 --scenes-per-worker 8 --workers 1 2 4 8 16

The model is a benchmark-only stand-in (:class:`SleepModel`, here, never in the package) that takes a
fixed time per window (a ``sleep``, so that 16 workers fit on 2 cores); everything else is the real
orchestration: the driver's lazy planning (:func:`aeroseg.distributed.parts.plan_scene`) and scheduling
loop (``runner._schedule``), the workers (``runner.Segmenter``) reading the windows, blending them and
writing the class rasters (tiled GeoTIFFs, ``--no-cog``: less CPU per window on 2 shared cores). Each run
has ``scenes_per_worker`` × N scenes of 3×3 windows (weak scaling); the workers are started and have
loaded the model before the timed part. Efficiency: windows per second against N × the 1-worker rate.
Driver CPU fraction: the driver process's CPU time during the run over the run's wall time (of one core).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from aeroseg.measure import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


class SleepModel(nn.Module):
    """Benchmark stand-in: ``seconds`` of sleep per window, then probabilities from the pixels' mean."""

    window = 32

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.scale = nn.Parameter(torch.ones(()))

    def encode(self, images: Tensor) -> Tensor:
        time.sleep(self.seconds * len(images))  # the fixed time of a window on an accelerator
        return images

    def probabilities(self, feats: Tensor, classes: list[str]) -> Tensor:
        mean = feats.mean(dim=1, keepdim=True) * self.scale  # (B, 1, h, w)
        return torch.cat([(mean * (t + 1) / len(classes)).clamp(0, 1) for t in range(len(classes))], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.1, help="sleep per window of the stand-in")
    parser.add_argument("--scenes-per-worker", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray_scale.json"))
    parser.add_argument("--note", default="", help="free text stored with the results (e.g. shared cores)")
    args = parser.parse_args()

    import ray
    from bench_predict_memory import write_scene

    from aeroseg.distributed import runner
    from aeroseg.distributed.parts import Job, plan_scene, unit_bands
    from aeroseg.prediction.classes import parse_classes
    from aeroseg.prediction.streaming import WindowOptions
    from aeroseg.raster import RasterSource, ReadOptions

    torch.set_num_threads(1)
    side = 3 * SleepModel.window  # 3×3 windows a scene (no overlap)
    options = WindowOptions(window=SleepModel.window, overlap=0.0, batch_size=3)
    job = Job(parse_classes("a,b,c"), ReadOptions(), options, "fp32", 0, "{}", cog=False)
    model = SleepModel(args.seconds).eval()
    runs = []
    started = time.perf_counter()
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False, namespace="aeroseg")
    ray_start = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="aeroseg-ray-scale-") as tmp:
        scene = Path(tmp) / "scene.tif"
        write_scene(scene, side)
        for n in args.workers:
            paths = []
            for i in range(n * args.scenes_per_worker):
                link = Path(tmp) / f"in_{n}" / f"s{i:04d}.tif"
                link.parent.mkdir(exist_ok=True)
                os.link(scene, link)
                paths.append(link)

            def planned(paths: list[Path] = paths, n: int = n):
                for path in paths:
                    with RasterSource(str(path), job.read) as source:
                        out = {"classes": Path(tmp) / f"out_{n}" / path.name}
                        out["classes"].parent.mkdir(exist_ok=True)
                        bands = unit_bands(source.height, source.width, options, 99)
                        yield plan_scene(str(path), out, source, job, bands)

            t0 = time.perf_counter()
            pool = runner._Pool(model, runner.Cluster("auto", n, 1, "cpu"), None)
            for ready in list(pool.starting):
                ray.get(ready)
                pool.started_up(ready)
            start_up = time.perf_counter() - t0
            work = runner._Work(planned())
            cpu, wall = time.process_time(), time.perf_counter()
            runner._schedule(work, pool, job, True, lambda scene: None)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            pool.close()
            windows = work.stats.windows
            runs.append(
                {
                    "workers": n,
                    "windows": windows,
                    "seconds": round(wall, 3),
                    "windows_per_s": round(windows / wall, 3),
                    "driver_cpu_s": round(cpu, 3),
                    "driver_cpu_fraction": round(cpu / wall, 4),
                    "workers_start_s": round(start_up, 2),
                }
            )
            base = runs[0]["windows_per_s"] / runs[0]["workers"]
            for run in runs:
                run["efficiency"] = round(run["windows_per_s"] / (run["workers"] * base), 3)
            print(runs[-1], flush=True)
    ray.shutdown()
    result = {
        "machine": machine(torch.device("cpu")),
        "note": args.note,
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            **{"side": side, "window": SleepModel.window, "windows_per_scene": 9},
        },
        "ray_start_s": round(ray_start, 2),
        "ideal_windows_per_s_per_worker": 1 / args.seconds,
        "runs": runs,
    }
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
