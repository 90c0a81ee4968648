"""SED's evaluation protocol: the whole image at once (``SED.forward`` in eval mode, ``sed/sed_model.py``;
its sliding window is never taken: ``forward`` sets ``self.sliding_window = False`` before testing it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from aeroseg.inference import shortest_edge_size

if TYPE_CHECKING:
    from aeroseg.sed.model import SED


@torch.inference_mode()
def reference_probabilities(model: SED, image: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
    """Per-class probabilities T×H×W (float32) of ``image`` (3×H×W in [0, 1]) as SED evaluates.

    The test mapper resizes the shorter side to ``test_min_size`` (the longer at most ``test_max_size``;
    antialiased, as PIL's bilinear); the model resizes that to its CLIP input, and its probabilities (sigmoid at
    the decoder's resolution, 0 for a class rejected early when ``early_rejection`` is on) are resized
    (bilinear) to the original H×W (``sem_seg_postprocess`` to the input's ``height`` and ``width``).
    """
    height, width = image.shape[-2:]
    config = model.config
    size = shortest_edge_size(height, width, config.test_min_size, config.test_max_size)
    resized = F.interpolate(
        image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True
    )
    feats = replace(model.encode(resized), image_size=(height, width))
    return model.probabilities(feats, classes)[0]
