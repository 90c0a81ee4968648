"""Segmentation of images and GeoTIFFs of any size: the Python API (``aeroseg.predict``), the streaming of
scenes window by window, and the files a prediction writes. The ``aeroseg predict`` verb is in
:mod:`aeroseg.cli.predict`.

``predict`` and ``PredictionResult`` are imported on first use: the modules below this package (checks,
outputs, streaming, ...) are also used by :mod:`aeroseg.distributed`, which the API itself calls.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aeroseg.prediction.api import PredictionResult, predict


def __getattr__(name: str) -> Any:
    if name not in ("PredictionResult", "predict"):
        raise AttributeError(f"module 'aeroseg.prediction' has no attribute {name!r}")
    return getattr(importlib.import_module("aeroseg.prediction.api"), name)


__all__ = ["PredictionResult", "predict"]
