"""Training-free open-vocabulary segmentation from public CLIP / SAM weights (preset ``training-free``).

The model (torch, transformers) is imported on first use; the config alone loads without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aeroseg.training_free.config import TrainingFreeConfig, training_free

_LAZY = {name: "aeroseg.training_free.model" for name in ("TrainingFreeFeatures", "TrainingFreeSegmenter")}

if TYPE_CHECKING:
    from aeroseg.training_free.model import TrainingFreeFeatures, TrainingFreeSegmenter


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'aeroseg.training_free' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "TrainingFreeConfig",
    "TrainingFreeFeatures",
    "TrainingFreeSegmenter",
    "training_free",
]
