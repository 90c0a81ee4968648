"""AerOSeg: open-vocabulary semantic segmentation of remote-sensing images.

    model = aeroseg.build("aeroseg")                  # a preset (aeroseg.presets() lists them)
    model = aeroseg.load("runs/isaid/final")          # a checkpoint: folder, hub id or CAT-Seg / OVRS file
    result = aeroseg.predict(model, "scene.tif", ["building", "road"], "out/")

Everything is imported on first use, so that ``import aeroseg.cli`` (``aeroseg --help``) loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aeroseg.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "AerOSeg": "aeroseg.modeling.aeroseg",
    "AerOSegOutput": "aeroseg.modeling.aeroseg",
    "ImageFeatures": "aeroseg.modeling.aeroseg",
    "AerOSegConfig": "aeroseg.config",
    "build": "aeroseg.registry",
    "load": "aeroseg.registry",
    "presets": "aeroseg.registry",
    "Segmenter": "aeroseg.segmenter",
    "predict": "aeroseg.prediction.api",
    "PredictionResult": "aeroseg.prediction.api",
}

if TYPE_CHECKING:
    from aeroseg.config import AerOSegConfig
    from aeroseg.modeling.aeroseg import AerOSeg, AerOSegOutput, ImageFeatures
    from aeroseg.prediction.api import PredictionResult, predict
    from aeroseg.registry import build, load, presets
    from aeroseg.segmenter import Segmenter

__getattr__ = lazy_exports(globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "AerOSeg",
    "AerOSegConfig",
    "AerOSegOutput",
    "ImageFeatures",
    "PredictionResult",
    "Segmenter",
    "build",
    "load",
    "predict",
    "presets",
]
