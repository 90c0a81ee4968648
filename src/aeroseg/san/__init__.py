"""SAN (Side Adapter Network, Xu et al., CVPR 2023) as an aeroseg model family: presets ``san`` (CLIP ViT-B/16)
and ``san-large`` (ViT-L/14@336), identical to ``MendelXu/SAN``; see ``docs/san.md``.

- :class:`SAN` (``model.py``): ``encode`` / ``probabilities`` / ``forward`` / ``forward_train`` /
  ``reference_probabilities``; its loss is :class:`aeroseg.mask_classification.MaskClassificationLoss`
- :class:`SANConfig`, :func:`san`, :func:`san_large` (``config.py``; the model is imported on first use)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aeroseg.lazy import lazy_exports
from aeroseg.san.config import PRESETS, SANConfig, san, san_large

_LAZY = {
    "SAN": "aeroseg.san.model",
    "SANFeatures": "aeroseg.san.model",
}

if TYPE_CHECKING:
    from aeroseg.san.model import SAN, SANFeatures

__getattr__ = lazy_exports(globals(), _LAZY)


__all__ = [
    "PRESETS",
    "SAN",
    "SANConfig",
    "SANFeatures",
    "san",
    "san_large",
]
