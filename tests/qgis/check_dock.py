"""QGIS side of tests/test_qgis_plugin.py: the plugin's GUI (menu, dock) and the dock's ``aeroseg serve``
worker answering a second class list from its cached image features.

    /usr/bin/python3 tests/qgis/check_dock.py CONFIG.json RESULTS.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import harness

config = json.loads(Path(sys.argv[1]).read_text())
app = harness.start(config["plugins"])

from aeroseg_qgis import classFactory, install  # noqa: E402 (after QGIS starts)
from aeroseg_qgis.settings import Settings  # noqa: E402
from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle  # noqa: E402
from qgis.PyQt.QtWidgets import QMessageBox  # noqa: E402

results: dict = {}
Settings(results=config["results"], checkpoint=config["checkpoint"], window=config["window"]).save()
iface = harness.fake_iface()
plugin = classFactory(iface)
plugin.initGui()
dock = plugin.dock
results["menu"] = {menu: [a.text() for a in actions] for menu, actions in iface.menus.items()}

scene = QgsRasterLayer(config["scene"], "scene")
QgsProject.instance().addMapLayer(scene)
iface.canvas.setDestinationCrs(scene.crs())
iface.canvas.setExtent(scene.extent())
dock.layer.setLayer(scene)
runs = []
x0, y0, x1, y1 = config["zoom"]
for classes, zoom in (
    ("building, road, tree|forest", None),  # the canvas shows the whole layer
    ("water, field|meadow, car", None),  # the same extent, another class list: from the cache
    ("building, road, tree|forest", QgsRectangle(x0, y0, x1, y1)),  # zoomed in: other pixels
):
    if zoom is not None:
        iface.canvas.setExtent(zoom)
    dock.classes.setText(classes)
    dock.last_layer = dock.last_state = None
    dock.segment()
    harness.wait_for(lambda: dock.task is None, 240, f"the dock to segment {classes!r}")
    layer = dock.last_layer
    runs.append({
        "canvas": iface.canvas.extent().toString(), "state": dock.last_state, "status": dock.status.text(),
        "file": layer.source() if layer else None,
        "labels": [c.label for c in layer.renderer().classes()] if layer else None,
        "messages": [item.text() for item in iface.bar.items()],
    })  # fmt: skip
results["runs"] = runs
worker = dock.worker
results["worker"] = {"command": worker.command, "address": worker.address, "token": worker.token is not None}

# No aeroseg anywhere and the offer to create its environment declined: one line in the message bar.
iface.bar.clearWidgets()
del os.environ["AEROSEG_EXECUTABLE"]
os.environ["PATH"] = config["bare_path"]
install.QMessageBox.question = lambda *args: QMessageBox.No
dock.segment()
results["missing"] = {"messages": [item.text() for item in iface.bar.items()], "task": dock.task is not None}

plugin.unload()
results["after_unload"] = {
    "worker_exit": worker.process.poll(), "worker_folder": worker.root.exists(),
    "provider": __import__("qgis.core").core.QgsApplication.processingRegistry().providerById("aeroseg") is not None,
}  # fmt: skip
results["modules"] = sorted(
    {m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "aeroseg", "rasterio"}
)
harness.report(sys.argv[2], results)
QgsProject.instance().clear()
app.exitQgis()
