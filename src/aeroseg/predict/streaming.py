"""Prediction of a scene of any size in memory that depends on the window, not on the scene.

The windows are those of :func:`aeroseg.inference.sliding_window_scores` on the whole scene (same starts,
same tent weights), so the result equals a whole-scene sliding window up to float rounding, with no seam
at stripe or row borders. The scene is cut into column stripes of ``stripe`` pixels; each
stripe runs the windows that touch it, row of windows by row of windows, top to bottom. After a row of
windows, the pixels above the next row's start have received every window that covers them: they are
labelled and written, and only the overlap is carried to the next row. Memory is about
classes × window × (stripe + window) floats; the windows that straddle a stripe border run in both stripes
(about window / stripe extra work). Windows that hold only nodata are skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from aeroseg.errors import UserError
from aeroseg.inference import FeatureCache, accumulate_windows, pad_to, window_starts
from aeroseg.predict.classes import ClassList
from aeroseg.predict.io import RasterSource

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GDAL_CACHE_MB = 64  # GDAL's block cache (default 5% of RAM) would otherwise grow with the scene


class Sink(Protocol):
    def write(self, window: Window, ids: np.ndarray, confidence: np.ndarray) -> None: ...


@dataclass(frozen=True)
class WindowOptions:
    """Sliding-window settings of a prediction."""

    window: int = 512  # window side in pixels (the model resizes each window to its own input size)
    overlap: float = 0.25  # minimum overlap of neighbouring windows, as a fraction of the window
    batch_size: int = 4  # windows per forward pass
    stripe: int = 4096  # width in pixels of the column stripes the scene is processed in

    def __post_init__(self) -> None:
        if self.window < 16:
            raise UserError(f"--window must be at least 16 pixels, got {self.window}")
        if not 0 <= self.overlap < 1:
            raise UserError(f"--overlap is a fraction of the window in [0, 1), got {self.overlap}")
        if self.batch_size < 1 or self.stripe < 1:
            raise UserError("--batch-size and the stripe width must be at least 1")


def count_windows(height: int, width: int, options: WindowOptions) -> int:
    """Number of window runs of a height×width scene (windows on a stripe border count twice)."""
    xs = window_starts(width, options.window, options.overlap)
    per_row = sum(
        len(_stripe_windows(xs, c0, min(c0 + options.stripe, width), options.window))
        for c0 in range(0, width, options.stripe)
    )
    return per_row * len(window_starts(height, options.window, options.overlap))


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to ``precision`` ("fp32", "bf16", "fp16") on ``device``; fp32 runs as is."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


@torch.inference_mode()
def segment_source(
    model: Any,
    source: RasterSource,
    classes: ClassList,
    sink: Sink,
    *,
    options: WindowOptions,
    device: torch.device,
    precision: str = "fp32",
    cache: FeatureCache | None = None,
    on_windows: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Label every pixel of ``source`` and write the labels to ``sink`` window by window.

    Returns the pixel count of every class id (256 counts, index 255 = nodata).
    """
    height, width, w = source.height, source.width, options.window
    ys = window_starts(height, w, options.overlap)
    xs = window_starts(width, w, options.overlap)
    counts = np.zeros(256, dtype=np.int64)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        for c0 in range(0, width, options.stripe):
            c1 = min(c0 + options.stripe, width)
            counts += _segment_stripe(
                model, source, classes, sink, ys, _stripe_windows(xs, c0, c1, w), (c0, c1),
                options=options, device=device, precision=precision, cache=cache, on_windows=on_windows,
            )  # fmt: skip
    return counts


def _segment_stripe(
    model: Any,
    source: RasterSource,
    classes: ClassList,
    sink: Sink,
    ys: list[int],
    xs: list[int],
    columns: tuple[int, int],
    *,
    options: WindowOptions,
    device: torch.device,
    precision: str,
    cache: FeatureCache | None,
    on_windows: Callable[[int], None] | None,
) -> np.ndarray:
    """Label the columns [c0, c1) of the scene with the windows starting at ``ys`` × ``xs``; pixel counts."""
    (c0, c1), w, height = columns, options.window, source.height
    x0, x1 = xs[0], min(xs[-1] + w, source.width)
    span = max(x1 - x0, w)  # accumulator width, padded when the scene is narrower than a window
    # Rows [top, top + w) of the stripe, top being the start of the current row of windows.
    sums = torch.zeros((len(classes.names), w, span), device=device)  # weighted class scores
    weights = torch.zeros((w, span), device=device)
    valid = torch.zeros((w, span), dtype=torch.bool, device=device)
    counts = np.zeros(256, dtype=np.int64)
    for i, top in enumerate(ys):
        bottom = min(top + w, height)
        image, ok = source.read(Window(x0, top, x1 - x0, bottom - top))
        valid[: bottom - top, : x1 - x0] = torch.from_numpy(ok)
        origins = [(0, x - x0) for x in xs if ok[:, x - x0 : x - x0 + w].any()]  # skip nodata windows
        if origins:
            with autocast(device, precision):
                accumulate_windows(
                    model, pad_to(torch.from_numpy(image).to(device), w, w), origins, classes.prompts,
                    sums, weights, window=w, batch_size=options.batch_size, reduce=classes.reduce, cache=cache,
                    on_batch=on_windows,
                )  # fmt: skip
        if on_windows is not None and len(origins) < len(xs):
            on_windows(len(xs) - len(origins))
        done = (ys[i + 1] if i + 1 < len(ys) else height) - top  # rows that no later window touches
        a, b = c0 - x0, c1 - x0
        best_sum, best = sums[:, :done, a:b].max(dim=0)  # the weights are shared by all classes of a pixel
        confidence = best_sum / weights[:done, a:b].clamp_min(1e-12)
        ids, confidence = classes.label(best, confidence, valid[:done, a:b])
        ids_np = ids.cpu().numpy()
        sink.write(Window(c0, top, c1 - c0, done), ids_np, confidence.cpu().numpy())
        counts += np.bincount(ids_np.ravel(), minlength=256)
        for buffer in (sums, weights[None], valid[None]):  # carry the overlap rows up to the next top
            buffer[:, : w - done] = buffer[:, done:].clone()
            buffer[:, w - done :] = 0
    return counts


def _stripe_windows(xs: list[int], c0: int, c1: int, window: int) -> list[int]:
    """Starts of the windows that cover at least one column of [c0, c1)."""
    return [x for x in xs if x < c1 and x + window > c0]
