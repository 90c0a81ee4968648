"""SED (Xie et al., CVPR 2024; xb534/SED) as a model family: presets ``sed`` (CLIP ConvNeXt-B) and ``sed-large``
(ConvNeXt-L), module for module the official model; see ``docs/sed.md``. The model (torch, transformers) is
imported on first use; the config alone loads without it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aeroseg.sed.config import PRESETS, SEDConfig, sed, sed_large

_LAZY = {
    "SEDLoss": "aeroseg.sed.criterion",
    "reference_probabilities": "aeroseg.sed.inference",
    "SED": "aeroseg.sed.model",
    "SEDFeatures": "aeroseg.sed.model",
    "SEDOutput": "aeroseg.sed.model",
}

if TYPE_CHECKING:
    from aeroseg.sed.criterion import SEDLoss
    from aeroseg.sed.inference import reference_probabilities
    from aeroseg.sed.model import SED, SEDFeatures, SEDOutput


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "PRESETS",
    "SED",
    "SEDConfig",
    "SEDFeatures",
    "SEDLoss",
    "SEDOutput",
    "reference_probabilities",
    "sed",
    "sed_large",
]
