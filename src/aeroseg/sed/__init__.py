"""SED (Xie et al., CVPR 2024; xb534/SED) as a model family: presets ``sed`` (CLIP ConvNeXt-B) and ``sed-large``
(ConvNeXt-L), module for module the official model; see ``docs/sed.md``. The model (torch, transformers) is
imported on first use; the config alone loads without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aeroseg.lazy import lazy_exports
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

__getattr__ = lazy_exports(globals(), _LAZY)


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
