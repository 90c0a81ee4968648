"""Windows over an image and their blending: the one place where window positions are computed.

Two ways to place windows along an axis, both used by the reference code this package follows:

- :func:`window_starts`: ours (``aeroseg predict``, ``evaluate --mode slide``, ``serve``): the first window
  starts at 0 and the last ends flush with the image, the others are spread evenly between them so that
  neighbours overlap by at least ``overlap``·``window``.
- :func:`stride_starts`: a window every ``stride`` pixels as ``nn.Unfold`` takes them, plus one flush with the
  end when the strides leave a remainder: CAT-Seg's sliding-window inference, SegEarth-OV's slide crops
  (:func:`crop_boxes`), the training-free model's crops and the tiling of ``aeroseg prepare``.

Overlapping window probabilities are averaged with a tent weight (:func:`blend_weight`: 1 at the window
centre, falling linearly towards its border) by :class:`Blend`, so that neighbouring windows fade into each
other and leave no seam; the in-memory sliding window and the streaming prediction of scenes of any size both
add their windows through :meth:`Blend.add`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of the windows along one axis of ``length`` pixels.

    The first start is 0 and the last is ``length - window``; the windows overlap by at least
    ``overlap * window`` pixels. A length not above ``window`` gives one window at 0 (padded by the caller).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if length <= window:
        return [0]
    stride = max(1, math.floor(window * (1 - overlap)))
    n = math.ceil((length - window) / stride) + 1
    return [round(i * (length - window) / (n - 1)) for i in range(n)]


def stride_starts(length: int, window: int, stride: int) -> list[int]:
    """Window starts every ``stride`` px as ``nn.Unfold`` takes them, plus one flush with the end when the
    strides leave a remainder; ``[0]`` when ``length`` is not above ``window`` (CAT-Seg
    ``inference_sliding_window``, SegEarth-OV ``slide_inference``)."""
    starts = list(range(0, max(1, length - window + 1), stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def crop_boxes(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Boxes (y1, y2, x1, x2) of ``crop``-px crops every ``stride`` px, the last of each axis flush with the
    border, row by row; a side shorter than ``crop`` gives one crop of that side (SegEarth-OV's slide boxes)."""
    ys, xs = stride_starts(height, crop, stride), stride_starts(width, crop, stride)
    return [(y, min(y + crop, height), x, min(x + crop, width)) for y in ys for x in xs]


def blend_weight(window: int, device: torch.device | str = "cpu") -> Tensor:
    """Tent weight of one window, window×window, 1 at the centre and 1/window at the border (never 0)."""
    centre = torch.arange(window, dtype=torch.float32, device=device) + 0.5
    tent = torch.minimum(centre, window - centre) / (window / 2)
    return tent[:, None] * tent[None, :]


def pad_to(image: Tensor, height: int, width: int) -> Tensor:
    """Pad ``image`` (C×H×W) at the bottom and right to at least height×width (reflect, else replicate)."""
    pad_h, pad_w = max(0, height - image.shape[-2]), max(0, width - image.shape[-1])
    if not pad_h and not pad_w:
        return image
    reflect = pad_h < image.shape[-2] and pad_w < image.shape[-1]
    return F.pad(image[None], (0, pad_w, 0, pad_h), mode="reflect" if reflect else "replicate")[0]


class Blend:
    """Tent-weighted sums of window probabilities over a region of ``rows``×``cols`` pixels.

    ``sums`` (K×rows×cols) holds weight·probability and ``weights`` (rows×cols) the weights; their ratio is
    the blended probability. Windows must lie inside the region (pad it for windows that reach beyond).
    """

    def __init__(self, channels: int, rows: int, cols: int, window: int, device: torch.device | str) -> None:
        self.window = window
        self.sums = torch.zeros((channels, rows, cols), device=device)
        self.weights = torch.zeros((rows, cols), device=device)
        self.weight = blend_weight(window, device)

    def add(self, row: int, column: int, probs: Tensor) -> None:
        """Add a window's probabilities K×window×window whose top-left corner is (``row``, ``column``)."""
        w = self.window
        self.sums[:, row : row + w, column : column + w].addcmul_(probs, self.weight)
        self.weights[row : row + w, column : column + w] += self.weight

    def blended(self) -> Tensor:
        """The blended probabilities K×rows×cols."""
        return self.sums / self.weights
