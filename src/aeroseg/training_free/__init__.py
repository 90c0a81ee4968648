"""Training-free open-vocabulary segmentation from public CLIP / SAM weights (preset ``training-free``).

The model (torch, transformers) is imported on first use; the config alone loads without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aeroseg.lazy import lazy_exports
from aeroseg.training_free.config import TrainingFreeConfig, training_free

_LAZY = {name: "aeroseg.training_free.model" for name in ("TrainingFreeFeatures", "TrainingFreeSegmenter")}

if TYPE_CHECKING:
    from aeroseg.training_free.model import TrainingFreeFeatures, TrainingFreeSegmenter

__getattr__ = lazy_exports(globals(), _LAZY)


__all__ = [
    "TrainingFreeConfig",
    "TrainingFreeFeatures",
    "TrainingFreeSegmenter",
    "training_free",
]
