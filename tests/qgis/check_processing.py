"""QGIS side of tests/test_qgis_plugin.py: the Processing algorithm ``aeroseg:segment``.

    /usr/bin/python3 tests/qgis/check_processing.py CONFIG.json RESULTS.json

CONFIG names the plugin folder, the scenes, the tiny checkpoint and the output folders; the aeroseg command
is $AEROSEG_EXECUTABLE. RESULTS receives what QGIS saw; the test asserts on it and on the files.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import harness

config = json.loads(Path(sys.argv[1]).read_text())
app = harness.start(config["plugins"])

import processing  # noqa: E402 (after QGIS starts)
from aeroseg_qgis import classFactory  # noqa: E402
from processing.gui.AlgorithmExecutor import execute  # noqa: E402
from qgis.core import QgsApplication, QgsProcessingContext, QgsProcessingException, QgsProject  # noqa: E402

results: dict = {}
plugin = classFactory(harness.fake_iface())
plugin.initProcessing()
algorithm = QgsApplication.processingRegistry().algorithmById("aeroseg:segment")
results["registered"] = algorithm is not None
results["parameters"] = [p.name() for p in algorithm.parameterDefinitions()]
base = {"CLASSES": "building, road, tree|forest", "CHECKPOINT": config["checkpoint"], "WINDOW": 64}

# The whole layer, loaded into the project as Processing's dialog does, with its polygons.
out = Path(config["out"])
feedback = harness.recorder()
start = time.monotonic()
outputs = processing.runAndLoadResults(
    "aeroseg:segment",
    dict(base, INPUT=config["scene"], OUTPUT=str(out / "classes.tif"), VECTOR=str(out / "polygons.gpkg")),
    feedback=feedback,
)
layers = []
for layer in QgsProject.instance().mapLayers().values():
    renderer = layer.renderer()
    entry = {"name": layer.name(), "source": layer.source(), "renderer": type(renderer).__name__}
    if hasattr(renderer, "classes"):  # paletted raster
        entry["labels"] = {c.value: c.label for c in renderer.classes()}
        entry["colours"] = {c.value: c.color.name() for c in renderer.classes()}
        entry["legend"] = [text for text, _ in renderer.legendSymbologyItems()]
    if hasattr(renderer, "categories"):  # categorised polygons
        entry["labels"] = [c.label() for c in renderer.categories()]
        entry["field"] = renderer.classAttribute()
    layers.append(entry)
results["whole"] = {
    "seconds": time.monotonic() - start, "outputs": outputs, "layers": layers, "errors": feedback.errors,
    "commands": feedback.commands, "console": feedback.console, "infos": feedback.infos,
}  # fmt: skip

# An extent (in the layer's CRS) cut on the layer's grid.
feedback = harness.recorder()
x0, y0, x1, y1 = config["extent"]
outputs = processing.run(
    "aeroseg:segment",
    dict(
        base,
        INPUT=config["scene"],
        EXTENT=f"{x0},{x1},{y0},{y1} [EPSG:32633]",
        OUTPUT=str(out / "extent.tif"),
    ),
    feedback=feedback,
)
results["extent"] = {"outputs": outputs, "errors": feedback.errors, "left": sorted(os.listdir(out))}

# Cancel as soon as aeroseg has started writing its class raster.
cancel_out = Path(config["cancel_out"])
feedback = harness.recorder()


def cancel_when_writing() -> None:
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if any(cancel_out.glob(".aeroseg-qgis-*/.*partial*")):
            results["cancel_seen"] = sorted(str(p.relative_to(cancel_out)) for p in cancel_out.rglob("*"))
            feedback.cancel()
            return
        time.sleep(0.05)


watcher = threading.Thread(target=cancel_when_writing)
watcher.start()
start = time.monotonic()
try:
    processing.run(
        "aeroseg:segment",
        dict(base, INPUT=config["big"], OUTPUT=str(cancel_out / "classes.tif")),
        feedback=feedback,
    )
    results["cancel"] = {"raised": None}
except QgsProcessingException as error:
    results["cancel"] = {"raised": str(error)}
watcher.join()
results["cancel"].update(
    seconds=time.monotonic() - start, left=sorted(os.listdir(cancel_out)), errors=feedback.errors,
    running=harness.running_with(str(cancel_out)),
)  # fmt: skip

# No aeroseg anywhere: one line in the log, as the toolbox dialog shows it, and from processing.run.
del os.environ["AEROSEG_EXECUTABLE"]
os.environ["PATH"] = config["bare_path"]
assert shutil.which("aeroseg") is None
feedback = harness.recorder()
parameters = dict(base, INPUT=config["scene"], OUTPUT=str(out / "missing.tif"))
ok, _ = execute(
    QgsApplication.processingRegistry().createAlgorithmById("aeroseg:segment"),
    parameters,
    QgsProcessingContext(),
    feedback,
)  # what the dialog's task runs
results["missing"] = {"ok": ok, "errors": feedback.errors}
try:
    processing.run("aeroseg:segment", parameters)
except QgsProcessingException as error:
    results["missing"]["raised"] = str(error)

results["modules"] = sorted(
    {m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "aeroseg", "rasterio"}
)
harness.report(sys.argv[2], results)
QgsProject.instance().clear()
app.exitQgis()
