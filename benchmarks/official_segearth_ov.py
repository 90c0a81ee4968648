"""The official SegEarth-OV (github.com/likyoo/SegEarth-OV) beside our ``segearth-ov`` on the same 512² window,
the same weights and the same torch threads, alternately in one process.

    python benchmarks/official_segearth_ov.py /path/to/SegEarth-OV --raster scene.tif
    PYTHONPATH=src:/path/to/SegEarth-OV python benchmarks/official_segearth_ov.py   # found on PYTHONPATH

Installs nothing: the checkout runs through ``tests/fixtures/make_segearth_ov.py``'s shims (mmseg, mmengine,
torchvision, ftfy; ``.cuda()`` / ``.half()`` as no-ops, so float32 on the CPU; FeatUp's CUDA
``AdaptiveConv`` replaced by the checkout's own ``adaptive_conv_py_simple``, the official code's CPU
path). Both models at real size: CLIP ViT-B/16 (OpenAI layout, QuickGELU) and the ``jbu_one`` SimFeatUp on
512 channels, every tensor filled from its key by ``tests/helpers/hashed_weights.hashed_state``; ours loads
the same tensors through its own loaders (a CLIP safetensors file, a SimFeatUp checkpoint). Class names: the
checkout's ``configs/cls_openearthmap.txt`` (synonyms merged by max, as the official code does). Each model's
text features are computed before the timing (the official segmentor at construction, ours by an untimed
first run of ours; the official one gets no untimed run: one takes minutes, and its text is done at
construction), so the times are one window's image work: the official ``predict`` (its resize to 448 and
normalisation included) against our ``encode`` + ``segment``. Writes seconds of every run, the ratio of the
best times official / ours, the largest difference of the class probabilities relative to their maximum and
the share of pixels whose class agrees, the machine, torch and the checkout's commit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rasterio
import torch
from rasterio.windows import Window
from safetensors.torch import save_file

from aeroseg import build
from aeroseg.cli.bench import write_json
from aeroseg.measure import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.fixtures.make_segearth_ov import (  # noqa: E402
    Sample,
    load_checkout,
    official_input,
    official_segmentor,
)
from tests.helpers.hashed_weights import hashed_state  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "official_segearth_ov.json"
PROB_THD = 0.1  # the official OpenEarthMap config


def find_checkout(given: Path | None) -> Path:
    """``given``, else the first ``sys.path`` entry holding ``segearth_segmentor.py``."""
    candidates = [given] if given else [Path(p) for p in sys.path if p]
    for path in candidates:
        if (path / "segearth_segmentor.py").is_file() and (path / "simfeatup_dev").is_dir():
            return path.resolve()
    where = f"{given} has no segearth_segmentor.py" if given else "no SegEarth-OV checkout on PYTHONPATH"
    raise SystemExit(f"error: {where}; pass the path of a likyoo/SegEarth-OV checkout")


def commit_of(checkout: Path) -> str | None:
    """The checkout's git commit, or None where it is not a git work tree."""
    done = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def window_image(raster: Path | None, size: int) -> torch.Tensor:
    """(1, 3, size, size) in [0, 1]: the top-left window of ``raster`` (bands 1-3, /255), else seeded noise
    over a few flat regions."""
    if raster is not None:
        with rasterio.open(raster) as src:
            pixels = src.read([1, 2, 3], window=Window(0, 0, size, size))
        return (torch.from_numpy(pixels).float() / 255)[None]
    g = torch.Generator().manual_seed(0)
    blocks = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(size, size))
    return (blocks + 0.1 * torch.rand(1, 3, size, size, generator=g)).clamp(0, 1)


def merged(probs: torch.Tensor, names: list[list[str]]) -> torch.Tensor:
    """(T, H, W) prompt probabilities → (classes, H, W): max over each class's synonyms."""
    out, i = [], 0
    for synonyms in names:
        out.append(probs[i : i + len(synonyms)].amax(0))
        i += len(synonyms)
    return torch.stack(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "checkout", nargs="?", type=Path, help="SegEarth-OV checkout (default: on PYTHONPATH)"
    )
    parser.add_argument("--raster", type=Path, help="take the top-left window of this GeoTIFF")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each, alternately")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--commit", help="the checkout's commit, where it is not a git work tree")
    args = parser.parse_args()
    checkout = find_checkout(args.checkout)
    torch.set_num_threads(args.threads)
    open_clip, segearth_segmentor, upsamplers = load_checkout(checkout)
    clip = open_clip.CLIP(
        embed_dim=512,
        vision_cfg=open_clip.CLIPVisionCfg(
            layers=12, width=768, head_width=64, patch_size=16, image_size=224
        ),
        text_cfg=open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
        quick_gelu=True,
    )
    clip_state = hashed_state({k: list(v.shape) for k, v in clip.state_dict().items()})
    clip.load_state_dict(clip_state, strict=True)
    upsampler = upsamplers.get_upsampler("jbu_one", 512)
    up_shapes = {f"upsampler.{k}": list(v.shape) for k, v in upsampler.state_dict().items()}
    up_state = hashed_state(up_shapes)
    names_file = checkout / "configs" / "cls_openearthmap.txt"
    names = [line.split(",") for line in names_file.read_text().splitlines() if line]
    prompts = [p for synonyms in names for p in synonyms]
    start = time.perf_counter()
    official = official_segmentor(segearth_segmentor, clip, up_state, names_file, PROB_THD)
    official_build = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        save_file(clip_state, f"{tmp}/clip.safetensors")
        torch.save({"state_dict": up_state}, f"{tmp}/simfeatup.ckpt")
        ours = build(
            "segearth-ov",
            clip=f"{tmp}/clip.safetensors",
            simfeatup=f"{tmp}/simfeatup.ckpt",
            background_threshold=PROB_THD,
        ).eval()
    image = window_image(args.raster, args.window)
    size = tuple(image.shape[-2:])

    def run_official() -> torch.Tensor:
        sample = Sample(size)
        official.predict(official_input(image), [sample])
        return sample.out["seg_logits"].data.float()  # (classes, H, W), synonyms merged

    def run_ours() -> torch.Tensor:
        return merged(ours.segment(ours.encode(image), prompts)[0].sigmoid(), names)

    runs: dict[str, list[float]] = {"official": [], "ours": []}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        ours.config.background_threshold = 0.0  # the official seg_logits are before its threshold
        probs = run_ours()  # untimed: caches our text features of the class list
        ours.config.background_threshold = PROB_THD
        for _ in range(args.repeats):
            for name, run in (("official", run_official), ("ours", run_ours)):
                start = time.perf_counter()
                outputs[name] = run()
                runs[name].append(time.perf_counter() - start)
        expected = outputs["official"]
    best = {name: min(seconds) for name, seconds in runs.items()}
    report = {
        "machine": machine(torch.device("cpu")),
        "precision": "fp32",
        "upstream": {"repository": "likyoo/SegEarth-OV", "commit": commit_of(checkout) or args.commit},
        "official_cpu_path": "the checkout's own python adaptive_conv_py_simple for FeatUp's CUDA AdaptiveConv; "
        ".cuda()/.half() as no-ops (float32 on the CPU)",
        "weights": "random at real size (CLIP ViT-B/16, jbu_one SimFeatUp on 512 channels), the same in both",
        "input": f"{args.raster.name if args.raster else 'seeded noise'}, top-left {size[0]}x{size[1]}",
        "classes": len(names),
        "prompts": len(prompts),
        "official_build_seconds_with_text": official_build,
        "seconds": best,
        "runs": runs,
        "ratio_official_over_ours": best["official"] / best["ours"],
        "probability_relative_difference": ((probs - expected).abs().max() / expected.abs().max()).item(),
        "class_agreement": (probs.argmax(0) == expected.argmax(0)).float().mean().item(),
    }
    write_json(report, args.json)
    print(
        f"official {best['official']:.2f} s, ours {best['ours']:.2f} s, "
        f"ratio {report['ratio_official_over_ours']:.1f}; "
        f"probabilities within {report['probability_relative_difference']:.1e} relative, "
        f"class agreement {report['class_agreement']:.4f}; wrote {args.json}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
