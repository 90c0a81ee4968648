"""AerOSeg: open-vocabulary semantic segmentation of remote-sensing images."""

from aeroseg.config import AerOSegConfig
from aeroseg.modeling.aeroseg import AerOSeg, AerOSegOutput, ImageFeatures
from aeroseg.presets import build, presets

__all__ = ["AerOSeg", "AerOSegConfig", "AerOSegOutput", "ImageFeatures", "build", "presets"]
__version__ = "0.1.0"
