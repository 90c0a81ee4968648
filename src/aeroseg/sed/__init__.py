"""SED (Xie et al., CVPR 2024; xb534/SED) as a model family: presets ``sed`` (CLIP ConvNeXt-B) and ``sed-large``
(ConvNeXt-L), module for module the official model; see ``docs/sed.md``."""

from aeroseg.sed.config import PRESETS, SEDConfig, sed, sed_large
from aeroseg.sed.criterion import SEDLoss
from aeroseg.sed.inference import reference_probabilities
from aeroseg.sed.model import SED, SEDFeatures, SEDOutput

__all__ = [
    "PRESETS", "SED", "SEDConfig", "SEDFeatures", "SEDLoss", "SEDOutput", "reference_probabilities", "sed",
    "sed_large",
]  # fmt: skip
