"""Optional packages: imported on first use, a missing one is a one-line error naming the extra to install.

The ``geo`` extra (``pip install "aeroseg[geo]"``) holds pystac and pystac-client (STAC inputs and output
Items, :mod:`aeroseg.stac`) and pyarrow (GeoParquet polygons, :mod:`aeroseg.prediction.vector`, and GeoParquet
labels, :mod:`aeroseg.data.vector_labels`); nothing else in aeroseg imports them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from aeroseg.errors import UserError

GEO = "geo"


def require(module: str, feature: str, extra: str = GEO) -> ModuleType:
    """``module`` imported; a :class:`UserError` saying that ``feature`` needs it and which extra holds it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0].replace("_", "-")
        raise UserError(
            f'{feature} needs {package}, which is not installed: pip install "aeroseg[{extra}]"'
        ) from None
