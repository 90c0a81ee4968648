"""Prediction of a scene of any size in memory that depends on the window, not on the scene.

The windows are those of :func:`aeroseg.inference.sliding_window_scores` on the whole scene (same starts,
same tent weights), so the result equals a whole-scene sliding window up to float rounding, with no seam
at stripe or row borders. The scene is cut into column stripes of ``stripe`` pixels; each stripe runs,
row of windows by row of windows, top to bottom, the windows that start in it. After a row of windows, the
pixels above the next row's start have received every window that covers them: they are labelled and
written, and only the overlap is carried to the next row. Every window runs once: the part of a window
that reaches into the next stripes is kept in a temporary file and added there in the same order as in a
single pass. Memory is about classes × window × (stripe + window) floats.

A band of window rows can run on its own (:func:`segment_band`, the unit of :mod:`aeroseg.distributed`):
started at a window row that no earlier window row overlaps below its first written pixel row, it writes
those rows exactly as a single pass does.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from aeroseg.errors import UserError
from aeroseg.inference import FeatureCache, window_probabilities
from aeroseg.precision import autocast
from aeroseg.prediction.classes import ClassList
from aeroseg.raster import RasterSource
from aeroseg.windows import Blend, pad_to, window_starts

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


class Grid:
    """The windows of a height×width scene: row starts ``ys``, column starts ``xs`` and column stripes."""

    def __init__(self, height: int, width: int, options: WindowOptions) -> None:
        self.height, self.width, self.window = height, width, options.window
        self.ys = window_starts(height, options.window, options.overlap)
        self.xs = window_starts(width, options.window, options.overlap)
        self.stripes = [(c0, min(c0 + options.stripe, width)) for c0 in range(0, width, options.stripe)]
        self.stripe = options.stripe

    def touching(self, k: int) -> list[int]:
        """Starts of the windows that cover at least one column of stripe ``k``."""
        c0, c1 = self.stripes[k]
        return [x for x in self.xs if x < c1 and x + self.window > c0]

    def owner(self, x: int) -> int:
        """The stripe that runs the windows starting at column ``x`` (the one holding ``x``)."""
        return x // self.stripe

    def seam_end(self, r: int) -> int:
        """First pixel row below the windows of rows < ``r`` (0 for the first row)."""
        return 0 if r == 0 else min(self.ys[r - 1] + self.window, self.height)


def count_windows(height: int, width: int, options: WindowOptions) -> int:
    """Number of windows of a height×width scene (each runs once)."""
    grid = Grid(height, width, options)
    return len(grid.ys) * len(grid.xs)


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
    grid = Grid(source.height, source.width, options)
    return segment_band(
        model, source, classes, sink, grid, (0, len(grid.ys)),
        options=options, device=device, precision=precision, cache=cache, on_windows=on_windows,
    )  # fmt: skip


@torch.inference_mode()
def segment_band(
    model: Any,
    source: RasterSource,
    classes: ClassList,
    sink: Sink,
    grid: Grid,
    rows: tuple[int, int],
    *,
    options: WindowOptions,
    device: torch.device,
    precision: str = "fp32",
    cache: FeatureCache | None = None,
    on_windows: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Run the window rows [r0, r1) and write the pixel rows from ``grid.seam_end(r0)`` (below the windows
    of earlier rows) to ``ys[r1]`` (the scene's height when ``r1`` is the last): those rows receive every
    window that covers them, in the order of a single pass. Returns the pixel count of every class id.
    """
    counts = np.zeros(256, dtype=np.int64)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), contextlib.ExitStack() as files:
        stores = [_Crossing(files) for _ in grid.stripes]  # windows reaching into each stripe from the left
        for k in range(len(grid.stripes)):
            counts += _segment_stripe(
                model, source, classes, sink, grid, rows, k, stores,
                options=options, device=device, precision=precision, cache=cache, on_windows=on_windows,
            )  # fmt: skip
    return counts


class _Accumulator(Blend):
    """Weighted class scores of the pixel rows [top, top + window) and columns [x0, x0 + span) of a stripe:
    a :class:`Blend` of one row of windows, with the validity of its pixels, labelled and shifted row by row."""

    def __init__(self, classes: int, window: int, span: int, device: torch.device) -> None:
        super().__init__(classes, window, span, window, device)
        self.valid = torch.zeros((window, span), dtype=torch.bool, device=device)

    def emit(
        self, classes: ClassList, sink: Sink, top: int, rows: tuple[int, int], cols: tuple[int, int], x0: int
    ) -> np.ndarray:
        """Label the buffer rows [a, b) of scene columns ``cols`` and write them; pixel counts."""
        a, b = rows
        if b <= a:
            return np.zeros(256, dtype=np.int64)
        c0, c1 = cols[0] - x0, cols[1] - x0
        best_sum, best = self.sums[:, a:b, c0:c1].max(dim=0)  # the weights are shared by all classes
        confidence = best_sum / self.weights[a:b, c0:c1].clamp_min(1e-12)
        ids, confidence = classes.label(best, confidence, self.valid[a:b, c0:c1])
        ids_np = ids.cpu().numpy()
        sink.write(Window(cols[0], top + a, cols[1] - cols[0], b - a), ids_np, confidence.cpu().numpy())
        return np.bincount(ids_np.ravel(), minlength=256)

    def shift(self, done: int) -> None:
        """Move the rows below ``done`` up to the top (the next row of windows starts there)."""
        w = self.window
        for buffer in (self.sums, self.weights[None], self.valid[None]):
            buffer[:, : w - done] = buffer[:, done:].clone()
            buffer[:, w - done :] = 0


class _Crossing:
    """The parts of windows that reach into a stripe from stripes on its left, in a temporary file."""

    def __init__(self, files: contextlib.ExitStack) -> None:
        self._files = files
        self._file: Any = None
        self._index: dict[int, list[tuple[int, int]]] = {}  # window row -> (column start, file offset)

    def put(self, row: int, x: int, probs: np.ndarray) -> None:
        if self._file is None:
            self._file = self._files.enter_context(tempfile.TemporaryFile(prefix="aeroseg-"))
        self._file.seek(0, 2)
        self._index.setdefault(row, []).append((x, self._file.tell()))
        np.save(self._file, probs)

    def take(self, row: int) -> list[tuple[int, np.ndarray]]:
        """The (column start, probabilities) stored for window row ``row``, by column."""
        found = []
        for x, offset in sorted(self._index.pop(row, [])):
            self._file.seek(offset)
            found.append((x, np.load(self._file)))
        return found


def _segment_stripe(
    model: Any,
    source: RasterSource,
    classes: ClassList,
    sink: Sink,
    grid: Grid,
    rows: tuple[int, int],
    k: int,
    stores: list[_Crossing],
    *,
    options: WindowOptions,
    device: torch.device,
    precision: str,
    cache: FeatureCache | None,
    on_windows: Callable[[int], None] | None,
) -> np.ndarray:
    """Label stripe ``k`` over the window rows ``rows``, running the windows that start in it."""
    (c0, c1), w, height, (r0, r1) = grid.stripes[k], grid.window, grid.height, rows
    touch = grid.touching(k)
    owned = [x for x in touch if grid.owner(x) == k]
    x0, x1 = touch[0], min(touch[-1] + w, grid.width)
    buffer = _Accumulator(len(classes.names), w, max(x1 - x0, w), device)  # padded for narrow scenes
    first = grid.seam_end(r0)
    counts = np.zeros(256, dtype=np.int64)
    for i in range(r0, r1):
        top = grid.ys[i]
        bottom = min(top + w, height)
        image, ok = source.read(Window(x0, top, x1 - x0, bottom - top))
        buffer.valid[: bottom - top, : x1 - x0] = torch.from_numpy(ok)
        for x, part in stores[k].take(i):
            buffer.add(0, x - x0, _padded(torch.from_numpy(part).to(device), w, columns=part.shape[2]))
        origins = [x for x in owned if ok[:, x - x0 : x - x0 + w].any()]  # skip nodata windows
        image_t = pad_to(torch.from_numpy(image).to(device), w, w)
        for start in range(0, len(origins), options.batch_size):
            chunk = origins[start : start + options.batch_size]
            crops = torch.stack([image_t[:, :w, x - x0 : x - x0 + w] for x in chunk])  # (B, 3, w, w)
            with autocast(device, precision):
                probs = window_probabilities(model, crops, classes.prompts, cache=cache)  # (B, T, w, w)
                probs = classes.reduce(probs)  # (B, K, w, w)
            for x, p in zip(chunk, probs, strict=True):
                buffer.add(0, x - x0, p)
                for later in range(k + 1, len(grid.stripes)):
                    if grid.stripes[later][0] < x + w:  # the window reaches into a later stripe
                        stores[later].put(i, x, p[:, :, grid.stripes[later][0] - x :].cpu().numpy())
            if on_windows is not None:
                on_windows(len(chunk))
        if on_windows is not None and len(origins) < len(owned):
            on_windows(len(owned) - len(origins))
        done = (grid.ys[i + 1] if i + 1 < len(grid.ys) else height) - top  # rows that no later window touches
        counts += buffer.emit(classes, sink, top, (max(0, first - top), done), (c0, c1), x0)
        buffer.shift(done)
    return counts


def _padded(part: torch.Tensor, window: int, *, columns: int) -> torch.Tensor:
    """A window's probabilities K×window×window from its last ``columns`` (zeros elsewhere).

    Adding a whole window keeps the operations of a single pass; the zero part lands on pixels not kept.
    """
    full = torch.zeros((part.shape[0], window, window), device=part.device)
    full[:, :, window - columns :] = part
    return full
