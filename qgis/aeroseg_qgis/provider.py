"""The Processing provider ``aeroseg``: its one algorithm, ``aeroseg:segment``."""

from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithm import SegmentAlgorithm

ICON = os.path.join(os.path.dirname(__file__), "icon.svg")


class AerosegProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "aeroseg"

    def name(self) -> str:
        return "aeroseg"

    def longName(self) -> str:  # noqa: N802 (QGIS's names)
        return "aeroseg: open-vocabulary segmentation of aerial and satellite images"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def loadAlgorithms(self) -> None:  # noqa: N802
        self.addAlgorithm(SegmentAlgorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["gpkg", "geojson"]
