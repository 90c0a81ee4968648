"""SCAN (Semantic-assisted CAlibration Network, Liu et al., CVPR 2024) as an aeroseg model family: presets
``scan`` (Swin-B + CLIP ViT-B/16) and ``scan-large`` (CLIP ViT-L/14), identical to ``yongliu20/SCAN``; see
``docs/scan.md``.

- :class:`SCAN` (``model.py``): ``encode`` / ``probabilities`` / ``forward`` / ``forward_train`` /
  ``reference_probabilities``; its loss is :class:`aeroseg.mask_classification.MaskClassificationLoss`
- :class:`SCANConfig`, :func:`scan`, :func:`scan_large` (``config.py``; the model is imported on first use)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aeroseg.lazy import lazy_exports
from aeroseg.scan.config import PRESETS, SCANConfig, scan, scan_large

_LAZY = {
    "SCAN": "aeroseg.scan.model",
    "SCANFeatures": "aeroseg.scan.model",
}

if TYPE_CHECKING:
    from aeroseg.scan.model import SCAN, SCANFeatures

__getattr__ = lazy_exports(globals(), _LAZY)


__all__ = [
    "PRESETS",
    "SCAN",
    "SCANConfig",
    "SCANFeatures",
    "scan",
    "scan_large",
]
