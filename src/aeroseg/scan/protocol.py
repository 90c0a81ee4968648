"""SCAN's evaluation protocol (``train_net.py`` test loader and ``SCAN.forward`` in eval mode): the shorter side
resized to ``INPUT.MIN_SIZE_TEST`` (640, the longer at most ``MAX_SIZE_TEST``), one pass, the scores brought
back to the image size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from aeroseg.inference import shortest_edge_size
from aeroseg.mask_classification import as_probabilities
from aeroseg.scan.model import SCAN


@torch.inference_mode()
def reference_probabilities(model: SCAN, image: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
    """T×H×W in [0, 1] for ``image`` (3×H×W, float in [0, 1] or uint8) by the official protocol.

    The resize is antialiased bilinear (as detectron2's ``ResizeShortestEdge``, PIL bilinear); the model pads
    the result to a multiple of 32, crops its regions from it, and the scores are resized to H×W
    (``sem_seg_postprocess``).
    """
    height, width = image.shape[-2:]
    image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    size = shortest_edge_size(height, width, model.config.test_size, model.config.test_max_size)
    resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)
    feats = model.encode(resized.clamp(0, 1))
    return as_probabilities(model.scores(feats, classes, size=(height, width)))[0]
