"""SCAN (Semantic-assisted CAlibration Network, Liu et al., CVPR 2024) as an aeroseg model family: presets
``scan`` (Swin-B + CLIP ViT-B/16) and ``scan-large`` (CLIP ViT-L/14), identical to ``yongliu20/SCAN``.

- :class:`SCAN` (``model.py``): ``encode`` / ``probabilities`` / ``forward`` / ``forward_train``
- :class:`SCANCriterion` (``criterion.py``), :func:`reference_probabilities` (``protocol.py``)
- :class:`SCANConfig`, :func:`scan`, :func:`scan_large` (``config.py``)
"""

from aeroseg.scan.config import PRESETS, SCANConfig, scan, scan_large
from aeroseg.scan.criterion import SCANCriterion
from aeroseg.scan.model import SCAN, SCANFeatures, SCANOutput
from aeroseg.scan.protocol import reference_probabilities

__all__ = [
    "PRESETS",
    "SCAN",
    "SCANConfig",
    "SCANCriterion",
    "SCANFeatures",
    "SCANOutput",
    "reference_probabilities",
    "scan",
    "scan_large",
]
