"""AerOSeg: open-vocabulary semantic segmentation of remote-sensing images.

The model classes are imported on first use, so that ``import aeroseg.cli`` (``aeroseg --help``) does not
load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aeroseg.config import AerOSegConfig
from aeroseg.presets import build, presets

__version__ = "0.1.0"

_LAZY = {name: "aeroseg.modeling.aeroseg" for name in ("AerOSeg", "AerOSegOutput", "ImageFeatures")}

if TYPE_CHECKING:
    from aeroseg.modeling.aeroseg import AerOSeg, AerOSegOutput, ImageFeatures


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'aeroseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["AerOSeg", "AerOSegConfig", "AerOSegOutput", "ImageFeatures", "build", "presets"]
