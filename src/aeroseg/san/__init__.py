"""SAN (Side Adapter Network, Xu et al., CVPR 2023) as an aeroseg model family: presets ``san`` (CLIP ViT-B/16)
and ``san-large`` (ViT-L/14@336), identical to ``MendelXu/SAN``.

- :class:`SAN` (``model.py``): ``encode`` / ``probabilities`` / ``forward`` / ``forward_train``
- :class:`SANCriterion` (``criterion.py``), :func:`reference_probabilities` (``protocol.py``)
- :class:`SANConfig`, :func:`san`, :func:`san_large` (``config.py``)
"""

from aeroseg.san.config import PRESETS, SANConfig, san, san_large
from aeroseg.san.criterion import SANCriterion
from aeroseg.san.model import SAN, SANFeatures, SANOutput
from aeroseg.san.protocol import reference_probabilities

__all__ = [
    "PRESETS",
    "SAN",
    "SANConfig",
    "SANCriterion",
    "SANFeatures",
    "SANOutput",
    "reference_probabilities",
    "san",
    "san_large",
]
