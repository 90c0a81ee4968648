"""Segmentation of images and GeoTIFFs of any size: the Python API (``aeroseg.predict``), the streaming of
scenes window by window, and the files a prediction writes. The ``aeroseg predict`` verb is in
:mod:`aeroseg.cli.predict`.

``predict`` and ``PredictionResult`` are imported on first use: the modules below this package (checks,
outputs, streaming, ...) are also used by :mod:`aeroseg.distributed`, which the API itself calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aeroseg.lazy import lazy_exports

if TYPE_CHECKING:
    from aeroseg.prediction.api import PredictionResult, predict

__getattr__ = lazy_exports(
    globals(), {name: "aeroseg.prediction.api" for name in ("PredictionResult", "predict")}
)


__all__ = ["PredictionResult", "predict"]
