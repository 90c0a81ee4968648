"""Raw label codes -> class ids: colour-coded masks (iSAID, RGB DLRSD) and value-coded ones (DLRSD, OEM)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_ROWS = 1024  # rows converted at a time, bounding the temporary memory for 20,000-px-wide scenes


def colors_to_ids(rgb: np.ndarray, colors: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """H×W×3 colour mask -> H×W uint8 ids: ``colors[i]`` becomes ``i``, any other colour ``ignore_index``."""
    table = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], dtype=np.int64)
    order = np.argsort(table)
    keys = table[order]
    out = np.full(rgb.shape[:2], ignore_index, dtype=np.uint8)
    for top in range(0, rgb.shape[0], _ROWS):
        chunk = rgb[top : top + _ROWS, :, :3].astype(np.int64)
        code = (chunk[..., 0] << 16) | (chunk[..., 1] << 8) | chunk[..., 2]  # rows×W
        pos = np.searchsorted(keys, code).clip(max=len(keys) - 1)
        hit = keys[pos] == code
        out[top : top + _ROWS][hit] = order[pos[hit]]
    return out


def values_to_ids(values: np.ndarray, raw_values: Sequence[int], ignore_index: int = 255) -> np.ndarray:
    """H×W integer label -> H×W uint8 ids: ``raw_values[i]`` becomes ``i``, other values ``ignore_index``."""
    if values.size and int(values.min()) < 0:
        raise ValueError("label values must be non-negative")
    size = max(int(values.max(initial=0)), max(raw_values)) + 1
    lut = np.full(size, ignore_index, dtype=np.uint8)
    lut[np.asarray(raw_values)] = np.arange(len(raw_values), dtype=np.uint8)
    return lut[values]
