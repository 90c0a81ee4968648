"""How far bf16 (and fp16) autocast moves AerOSeg's outputs from fp32, per component, on the same random weights.

    PYTHONPATH=src python benchmarks/bf16_accuracy.py [--presets aeroseg,baseline] [--paper-size PRESET] \\
        [--out benchmarks/results/bf16_accuracy.json]

For each model (the tiny models of ``--presets``, built in memory as ``aeroseg bench --short`` builds them, on
a 2×3×64² batch; and with ``--paper-size PRESET`` that preset's paper-size architecture with random weights, its
guidance input shrunk to ``--guidance-size`` to keep the run to minutes) one fp32 forward and one forward per
lower precision run on the same images and 10 classes. Each component's output (as ``aeroseg bench`` splits
the model: clip, text, guidance, correlation, refinement, decoder, then the logits) is compared with its fp32
output: ``relative_error`` = ||low − fp32|| / ||fp32|| over all its tensors, ``max_relative_error`` = the largest
|low − fp32| over the largest |fp32|. The errors accumulate: each component's inputs already carry the earlier
components' rounding, as in a real run.

Argmax agreement. On random weights the two best classes of a pixel are nearly tied (the median top-2 margin
is about the size of the bf16 rounding), so the plain agreement says little about a trained model. The
``agreement_at_margin`` rows give a model whose winner leads by a trained model's margin: the fp32 winner of
every pixel gets ``q`` × (the largest |fp32 logit|) added in both precisions (the same exact offset, after the
network, so the network's own bf16 error is unchanged), for a sweep of ``q``; a pixel keeps its class when the
bf16 error of the logit differences stays below that margin. No trained checkpoint is reachable from this
machine, so ``q`` is swept rather than taken from one.

Where the CPU has no native bf16 (``machine.native_bf16`` false), bf16 is emulated by oneDNN with fp32
accumulation: the accuracy figures hold, the speed does not (``aeroseg bench`` measures speed).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

from aeroseg import registry
from aeroseg._tiny import build_tiny
from aeroseg.measure import _targets, class_names, compare_logits, machine
from aeroseg.precision import autocast

MARGINS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)  # q: the winner's lead as a share of the largest |fp32 logit|


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor of a component's output (tensors, tuples and lists of them, GuidanceFeatures)."""
    if isinstance(value, torch.Tensor):
        return [value.float()]
    if is_dataclass(value):
        return [t for f in fields(value) for t in _tensors(getattr(value, f.name))]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


@contextmanager
def captured(model: torch.nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """The outputs of each component of ``model`` (the calls ``aeroseg bench`` times) while active."""
    outputs: dict[str, list[torch.Tensor]] = {}

    def wrap(name: str, method: Any) -> Any:
        def keep(*args: Any, **kwargs: Any) -> Any:
            out = method(*args, **kwargs)
            outputs[name] = _tensors(out)
            return out

        return keep

    targets = _targets(model)
    for name, owner, method in targets:
        setattr(owner, method, wrap(name, getattr(owner, method)))
    try:
        yield outputs
    finally:
        for _, owner, method in targets:
            delattr(owner, method)


def run(model: torch.nn.Module, images: torch.Tensor, classes: list[str], precision: str):
    """Component outputs and logits of one forward in ``precision``; seconds."""
    model.eval()  # empties the text cache: the text encoder runs in this precision
    start = time.perf_counter()
    with torch.inference_mode(), autocast(images.device, precision), captured(model) as outputs:
        logits = model(images, classes)
    return outputs, logits.float(), time.perf_counter() - start


def component_errors(reference: list[torch.Tensor], other: list[torch.Tensor]) -> dict[str, float]:
    a = torch.cat([t.flatten() for t in reference])
    b = torch.cat([t.flatten() for t in other])
    return {
        "relative_error": float((b - a).norm() / a.norm()),
        "max_relative_error": float((b - a).abs().max() / a.abs().max()),
    }


def agreement_at_margins(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    """Share of pixels keeping the fp32 class when the fp32 winner leads by q × max|fp32 logit| (B×T×H×W)."""
    winner = torch.nn.functional.one_hot(reference.argmax(1), reference.shape[1]).permute(0, 3, 1, 2)
    scale = reference.abs().max()
    result = {}
    for q in MARGINS:
        lead = q * scale * winner
        result[str(q)] = float(((reference + lead).argmax(1) == (other + lead).argmax(1)).float().mean())
    return result


def measure(name: str, model: torch.nn.Module, images: torch.Tensor, precisions: list[str]) -> dict[str, Any]:
    classes = class_names(10)
    reference, logits, seconds = run(model, images, classes, "fp32")
    entry: dict[str, Any] = {
        "model": name,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "images": list(images.shape),
        "classes": len(classes),
        "fp32_seconds": round(seconds, 2),
    }
    for precision in precisions:
        outputs, other, seconds = run(model, images, classes, precision)
        difference = compare_logits(logits, other)
        components = {n: component_errors(reference[n], outputs[n]) for n in reference}
        components["logits"] = component_errors([logits], [other])
        entry[precision] = {
            "seconds": round(seconds, 2),
            "components": components,
            "argmax_agreement": difference["argmax_agreement"],
            "median_logit_error": difference["median_logit_error"],
            "median_margin": difference.get("median_margin"),
            "median_margin_relative": difference.get("median_margin", 0.0) / float(logits.abs().max()),
            "agreement_at_margin": agreement_at_margins(logits, other),
        }
        at = entry[precision]["agreement_at_margin"]["0.05"]
        print(
            f"{name} {precision}: logits rel. error {components['logits']['relative_error']:.2e}, argmax "
            f"{difference['argmax_agreement']:.2%}, at margin 0.05: {at:.2%}",
            flush=True,
        )
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="aeroseg,aeroseg-sam2-hiera-b+,baseline", help="tiny models")
    parser.add_argument(
        "--paper-size", metavar="PRESET", help="also this preset at paper size (random weights)"
    )
    parser.add_argument("--guidance-size", type=int, default=256, help="--paper-size: guidance input side")
    parser.add_argument("--image-size", type=int, default=128, help="--paper-size: window side")
    parser.add_argument("--precisions", default="bf16,fp16")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    device = torch.device("cpu")
    results: dict[str, Any] = {"machine": machine(device), "margins_q": list(MARGINS), "models": []}
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for preset in filter(None, args.presets.split(",")):
        results["models"].append(
            measure(f"{preset} (tiny)", build_tiny(preset, seed=0).eval(), images, precisions)
        )
    if args.paper_size:
        torch.manual_seed(0)
        model = registry.build(
            args.paper_size, pretrained=False, guidance_image_size=args.guidance_size
        ).eval()
        size = args.image_size
        paper_images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        name = f"{args.paper_size} (paper size, random weights, guidance input {args.guidance_size}²)"
        results["models"].append(measure(name, model, paper_images, precisions))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
