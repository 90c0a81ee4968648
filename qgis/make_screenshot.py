"""Take docs/qgis.png: QGIS with the aeroseg dock and a segmented canvas extent, under Xvfb.

    PYTHONPATH=src:. python qgis/make_screenshot.py [OUT.png]

Needs Debian's QGIS desktop and Xvfb (``apt-get install qgis xvfb``; the tests need only python3-qgis). The
plugin is installed from its zip into a fresh QGIS profile; QGIS opens the test GeoTIFF of ``aeroseg predict``
(tests/test_predict.py: ``smooth_image``, 0.5 m pixels in UTM 33N), zooms in, types the classes into the dock
and presses Segment, then a second class list on the same extent (answered from the worker's cache), hides
the first result, zooms out and grabs its window. aeroseg runs a tiny random model (tests/helpers/tiny.py),
so the classes show the interface, not a trained model's quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tests.helpers.tiny import build_tiny_model
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff

HERE = Path(__file__).resolve().parent
SCREEN = (1440, 900)
LIMIT = 240  # seconds QGIS may take, after which it is closed without a screenshot
CLASSES = ["building, road, tree|forest, water", "water, field|meadow, car, roof|building"]

# Run by QGIS (--code) once it has started, with the plugin loaded; OUT, SCENE, CLASSES, SCREEN and LIMIT
# are defined before it.
IN_QGIS = """
import qgis.utils
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

QTimer.singleShot(LIMIT * 1000, lambda: QgsApplication.exit(1))  # never hangs, whatever goes wrong

window = iface.mainWindow()
window.setGeometry(0, 0, *SCREEN)  # Xvfb has no window manager to maximise it
layer = QgsRasterLayer(SCENE, "scene")
QgsProject.instance().addMapLayer(layer)
canvas = iface.mapCanvas()
full = layer.extent()
dock = qgis.utils.plugins["aeroseg_qgis"].dock
dock.show()
dock.raise_()
dock.layer.setLayer(layer)
lists = list(CLASSES)  # the second list on the same extent is answered from the worker's cache
results = []


def zoom(fraction):
    centre = full.center()
    w, h = full.width() * fraction / 2, full.height() * fraction / 2
    canvas.setExtent(QgsRectangle(centre.x() - w, centre.y() - h, centre.x() + w, centre.y() + h))
    canvas.refresh()


def segment():
    dock.classes.setText(lists.pop(0))
    dock.segment()


def start():
    zoom(0.45)
    QTimer.singleShot(1500, segment)


def shown():
    results.append(dock.last_layer)
    if lists:
        QTimer.singleShot(500, segment)
        return
    root = QgsProject.instance().layerTreeRoot()
    for earlier in results[:-1]:
        root.findLayer(earlier.id()).setItemVisibilityChecked(False)
    zoom(1.15)
    iface.layerTreeView().expandAll()
    QTimer.singleShot(4000, shoot)


def shoot():
    window.grab().save(OUT)
    dock.shutdown()
    QgsProject.instance().clear()
    QgsProject.instance().setDirty(False)
    QgsApplication.exit(0)


dock.done.connect(shown)
QTimer.singleShot(3000, start)
"""


def main(out: Path) -> None:
    sys.path.insert(0, str(HERE))
    from build_plugin import build

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        scene = write_geotiff(tmp / "scene.tif", smooth_image(512, 640, seed=3))
        build_tiny_model().save_pretrained(tmp / "tiny")
        wrapper = tmp / "aeroseg"
        src = HERE.parent / "src"
        wrapper.write_text(
            f'#!/bin/sh\nPYTHONPATH="{src}" HF_HUB_OFFLINE=1 exec "{sys.executable}" -m aeroseg "$@"\n'
        )
        wrapper.chmod(0o755)
        profile = tmp / "profiles" / "shot"
        with zipfile.ZipFile(build(tmp / "aeroseg_qgis.zip")) as archive:
            archive.extractall(profile / "python" / "plugins")
        (profile / "QGIS").mkdir(parents=True)
        (profile / "QGIS" / "QGIS3.ini").write_text(
            "[PythonPlugins]\naeroseg_qgis=true\n"
            f"[aeroseg]\ncheckpoint={tmp / 'tiny'}\nwindow=128\nresults={tmp / 'results'}\n"
            "[app]\nplugin_installer\\checkOnStart=false\n"
            "[core]\nNewsFeed\\httpsfeedqgisorg\\disabled=true\n"
            "[qgis]\ncheckVersion=false\n"
        )
        code = tmp / "shot.py"
        names = {
            "OUT": str(out.resolve()),
            "SCENE": scene,
            "CLASSES": CLASSES,
            "SCREEN": SCREEN,
            "LIMIT": LIMIT,
        }
        code.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in names.items()) + IN_QGIS)
        (tmp / "runtime").mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYENV", "VIRTUAL_ENV"))}
        env.update(AEROSEG_EXECUTABLE=str(wrapper), HOME=str(tmp), XDG_RUNTIME_DIR=str(tmp / "runtime"))
        env["PATH"] = (
            "/usr/bin:/bin"  # QGIS's Python finds its prefix on PATH: Debian's, not this interpreter's
        )
        out.unlink(missing_ok=True)
        command = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN[0]}x{SCREEN[1]}x24", "qgis"]
        command += ["--profiles-path", str(tmp), "--profile", "shot", "--nologo", "--noversioncheck"]
        subprocess.run(command + ["--code", str(code)], env=env, timeout=LIMIT + 120, check=False)
        if not out.exists():
            sys.exit(f"make_screenshot: QGIS wrote no {out}")
        print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/qgis.png"))
