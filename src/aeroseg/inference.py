"""Sliding-window inference: per-class probabilities of an image of any size.

Two protocols. :func:`reference_scores` is the evaluation protocol of the paper's reference code (CAT-Seg's
``inference_sliding_window``, run by its and OVRS's ``eval.sh``): a fixed 640² resize, four 384-px windows
and one global view, averaged. :func:`sliding_window_scores`, described next, is ours for large images
(``aeroseg predict`` and ``evaluate --mode slide``).

Windows of ``window``×``window`` pixels overlap by at least ``overlap``·``window``
(:func:`aeroseg.windows.window_starts`) and their probabilities are blended with a tent weight
(:class:`aeroseg.windows.Blend`), so neighbouring windows leave no seam. An image smaller than a window is
padded (reflect, or replicate when it is too small to reflect) and the result is cropped back.

Any :class:`aeroseg.segmenter.Segmenter` works: every model family and the stand-ins of the tests.
:class:`FeatureCache` keeps the image features of recent windows so that a second class list on the same
image skips the image encoders (as SAM's predictor keeps the image embedding between prompts).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aeroseg.segmenter import Segmenter
from aeroseg.windows import Blend, pad_to, stride_starts, window_starts


class FeatureCache:
    """Least-recently-used image features, keyed by the content of a batch of windows.

    The key also holds the model's identity, the version counters of its parameters (so features computed
    before a weight update are never reused), the device and the autocast dtype. At most ``max_windows``
    windows are kept; each batch of windows is one entry.
    """

    def __init__(self, max_windows: int = 16) -> None:
        self.max_windows = max_windows
        self._entries: OrderedDict[tuple, tuple[int, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.encoded = 0  # windows whose features were computed (not taken from the cache)

    def features(self, model: Segmenter, images: Tensor) -> Any:
        """``model.encode(images)`` (images B×3×h×w), from the cache when these windows were seen."""
        key = self._key(model, images)
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key][1]
        self.misses += 1
        self.encoded += len(images)
        feats = model.encode(images)
        if len(images) <= self.max_windows:
            self._entries[key] = (len(images), feats)
            while sum(n for n, _ in self._entries.values()) > self.max_windows:
                self._entries.popitem(last=False)
        return feats

    @staticmethod
    def _key(model: Any, images: Tensor) -> tuple:
        params = model.parameters() if hasattr(model, "parameters") else ()
        version = sum(p._version for p in params)
        device_type = images.device.type
        autocast = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        digest = hashlib.blake2b(images.detach().contiguous().cpu().numpy().tobytes(), digest_size=16)
        return (id(model), version, str(images.device), str(autocast), tuple(images.shape), digest.digest())


def window_probabilities(
    model: Segmenter, images: Tensor, classes: Sequence[str], *, cache: FeatureCache | None = None
) -> Tensor:
    """Probabilities B×T×h×w (float32) of a batch of windows B×3×h×w."""
    feats = cache.features(model, images) if cache is not None else model.encode(images)
    return model.probabilities(feats, list(classes))


@torch.inference_mode()
def sliding_window_scores(
    model: Segmenter,
    image: Tensor,
    classes: Sequence[str],
    *,
    window: int = 512,
    overlap: float = 0.25,
    batch_size: int = 4,
    cache: FeatureCache | None = None,
) -> Tensor:
    """Per-class sigmoid probabilities T×H×W (float32) of ``image``, a float 3×H×W tensor in [0, 1].

    Windows of ``window`` pixels overlapping by ``overlap`` (a fraction of the window) run through the
    model ``batch_size`` at a time and are blended without seams. The result is on ``image``'s device.
    """
    height, width = image.shape[-2:]
    padded = pad_to(image, window, window)
    origins = [
        (y, x) for y in window_starts(height, window, overlap) for x in window_starts(width, window, overlap)
    ]
    blend = Blend(len(classes), *padded.shape[-2:], window, image.device)
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        crops = torch.stack([padded[:, y : y + window, x : x + window] for y, x in chunk])  # (B, 3, w, w)
        probs = window_probabilities(model, crops, classes, cache=cache)  # (B, T, w, w)
        for (y, x), p in zip(chunk, probs, strict=True):
            blend.add(y, x, p)
    return blend.blended()[:, :height, :width]


def shortest_edge_size(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """detectron2's ``ResizeShortestEdge`` output size: shorter side ``size``, longer at most ``max_size``."""
    scale = size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@torch.inference_mode()
def reference_scores(
    model: Segmenter,
    image: Tensor,
    classes: Sequence[str],
    *,
    size: int = 640,
    window: int = 384,
    stride: int = 256,
    max_size: int = 2560,
    batch_size: int = 5,
) -> Tensor:
    """Per-class sigmoid probabilities T×H×W (float32) of ``image`` (3×H×W in [0, 1]) by the reference protocol.

    As CAT-Seg's test mapper (``MIN_SIZE_TEST: 640``, ``MAX_SIZE_TEST: 2560``, ``configs/config.yaml``) and
    ``CATSeg.inference_sliding_window`` (``cat_seg/cat_seg_model.py``, kernel 384, overlap 0.333 -> stride 256,
    ``out_res`` 640): the shorter side is resized to ``size`` (antialiased, as PIL's bilinear), the result
    stretched to ``size``×``size``; ``window``-px windows every ``stride`` px and one global view (the resized
    image shrunk to ``window``², no antialiasing) run through the model; window probabilities are averaged
    where they overlap, the global one is brought up to ``size``², the two are averaged, and the result is
    resized to H×W (bilinear). ``batch_size`` views go through the model at a time.
    """
    height, width = image.shape[-2:]
    resized = F.interpolate(
        image[None].float(),  # (1, 3, H, W)
        size=shortest_edge_size(height, width, size, max_size),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    square = F.interpolate(resized, size=(size, size), mode="bilinear", align_corners=False)[0]  # (3, S, S)
    starts = stride_starts(size, window, stride)
    origins = [(y, x0) for y in starts for x0 in starts]
    views = [square[:, y : y + window, x0 : x0 + window] for y, x0 in origins]
    views.append(F.interpolate(resized, size=(window, window), mode="bilinear", align_corners=False)[0])
    probs = torch.cat(
        [
            window_probabilities(model, torch.stack(views[i : i + batch_size]), classes)
            for i in range(0, len(views), batch_size)
        ]
    )  # (N + 1, T, window, window)
    local = torch.zeros((len(classes), size, size), device=image.device)
    count = torch.zeros((size, size), device=image.device)
    for (y, x0), p in zip(origins, probs[:-1], strict=True):
        local[:, y : y + window, x0 : x0 + window] += p
        count[y : y + window, x0 : x0 + window] += 1
    global_ = F.interpolate(probs[-1:], size=(size, size), mode="bilinear", align_corners=False)[0]
    blended = (local / count + global_) / 2  # (T, S, S)
    return F.interpolate(blended[None], size=(height, width), mode="bilinear", align_corners=False)[0]
