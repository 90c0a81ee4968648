"""The plugin object QGIS loads: the Processing provider, the dock and the Raster ▸ aeroseg menu."""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import install
from .dock import SegmentDock
from .provider import ICON, AerosegProvider
from .settings import SettingsDialog

MENU = "&aeroseg"


class AerosegPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: AerosegProvider | None = None
        self.dock: SegmentDock | None = None
        self.actions: list[QAction] = []

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's names)
        if self.provider is None:
            self.provider = AerosegProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        window = self.iface.mainWindow()
        self.dock = SegmentDock(self.iface, window)
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        toggle = self.dock.toggleViewAction()
        toggle.setIcon(QIcon(ICON))
        toggle.setText("aeroseg: segment by class names")
        settings = QAction("Settings…", window)
        settings.triggered.connect(self.edit_settings)
        setup = QAction("Set up aeroseg environment…", window)
        setup.triggered.connect(lambda: install.start(self.iface.messageBar()))
        self.actions = [toggle, settings, setup]
        for action in self.actions:
            self.iface.addPluginToRasterMenu(MENU, action)
        self.iface.addRasterToolBarIcon(toggle)

    def edit_settings(self) -> None:
        SettingsDialog(
            self.iface.mainWindow(), on_setup=lambda: install.start(self.iface.messageBar())
        ).exec_()

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
        if self.actions:
            self.iface.removeRasterToolBarIcon(self.actions[0])
        self.actions = []
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
