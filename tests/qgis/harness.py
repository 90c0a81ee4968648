"""What the QGIS-side checks share: QGIS started headless, the plugin importable, a stand-in for QGIS's
``iface`` (a main window with a map canvas, a layer tree, a message bar), a feedback that records.

These scripts run in Debian's QGIS Python (/usr/bin/python3), never in the interpreter that runs pytest;
``tests/test_qgis_plugin.py`` starts them and checks what they report.
"""

from __future__ import annotations

import json
import sys
import time

PROCESSING_PLUGINS = "/usr/share/qgis/python/plugins"  # Debian's python3-qgis: the processing plugin


def start(plugins: str):
    """QGIS with its GUI classes (offscreen or under Xvfb), Processing initialised, ``plugins`` (the folder
    the plugin zip was unpacked into) importable."""
    sys.path[:0] = [plugins, PROCESSING_PLUGINS]
    from qgis.core import QgsApplication

    app = QgsApplication([], True)
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    return app


def wait_for(condition, timeout: float, what: str) -> None:
    """Run QGIS's event loop until ``condition()`` holds; AssertionError after ``timeout`` seconds."""
    from qgis.core import QgsApplication

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        QgsApplication.processEvents()
        time.sleep(0.02)


def report(path: str, results: dict) -> None:
    with open(path, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2, default=str)


def fake_iface():
    """A stand-in for QGIS's ``iface``: the calls the plugin makes, on real widgets."""
    from qgis.core import QgsLayerTreeModel, QgsProject
    from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsLayerTreeView, QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QDockWidget, QMainWindow, QVBoxLayout, QWidget

    class FakeIface:
        def __init__(self) -> None:
            self.window = QMainWindow()
            self.canvas = QgsMapCanvas()
            self.bar = QgsMessageBar()
            centre = QWidget()
            layout = QVBoxLayout(centre)
            layout.setContentsMargins(0, 0, 0, 0)
            layout.addWidget(self.bar)
            layout.addWidget(self.canvas)
            self.window.setCentralWidget(centre)
            root = QgsProject.instance().layerTreeRoot()
            self.bridge = QgsLayerTreeMapCanvasBridge(root, self.canvas)
            self.tree = QgsLayerTreeView()
            self.tree.setModel(QgsLayerTreeModel(root))
            layers = QDockWidget("Layers")
            layers.setWidget(self.tree)
            self.window.addDockWidget(Qt.LeftDockWidgetArea, layers)
            self.menus: dict[str, list] = {}
            self.toolbar: list = []

        def mainWindow(self):  # noqa: N802 (QGIS's names)
            return self.window

        def mapCanvas(self):  # noqa: N802
            return self.canvas

        def messageBar(self):  # noqa: N802
            return self.bar

        def addDockWidget(self, area, dock):  # noqa: N802
            self.window.addDockWidget(area, dock)

        def removeDockWidget(self, dock):  # noqa: N802
            self.window.removeDockWidget(dock)

        def addPluginToRasterMenu(self, menu, action):  # noqa: N802
            self.menus.setdefault(menu, []).append(action)

        def removePluginRasterMenu(self, menu, action):  # noqa: N802
            self.menus[menu].remove(action)

        def addRasterToolBarIcon(self, action):  # noqa: N802
            self.toolbar.append(action)

        def removeRasterToolBarIcon(self, action):  # noqa: N802
            self.toolbar.remove(action)

    return FakeIface()


def recorder():
    """A Processing feedback that keeps everything the algorithm reports."""
    from qgis.core import QgsProcessingFeedback

    class Recorder(QgsProcessingFeedback):
        def __init__(self) -> None:
            super().__init__()
            self.errors, self.infos, self.console, self.commands, self.progress = [], [], [], [], []
            self.progressChanged.connect(self.progress.append)

        def reportError(self, error, fatalError=False):  # noqa: N802, N803
            self.errors.append(error)

        def pushInfo(self, info):  # noqa: N802
            self.infos.append(info)

        def pushConsoleInfo(self, info):  # noqa: N802
            self.console.append(info)

        def pushCommandInfo(self, info):  # noqa: N802
            self.commands.append(info)

    return Recorder()


def running_with(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (Linux)."""
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if text.encode() in file.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found
