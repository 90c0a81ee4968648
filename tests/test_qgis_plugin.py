"""The QGIS plugin (``qgis/aeroseg_qgis``) in Debian's QGIS, and its zip (QGIS-free parts:
tests/test_qgis_parts.py).

QGIS's Python is Debian's ``/usr/bin/python3`` (``apt-get install python3-qgis qgis-providers``), not the
interpreter running pytest; the QGIS checks are scripts (``tests/qgis/check_*.py``) run there, headless
(``QT_QPA_PLATFORM=offscreen``), on the plugin as its zip installs it, with ``aeroseg`` an executable
wrapper around this interpreter and this checkout's ``aeroseg`` on a tiny random checkpoint. They report
what QGIS saw as JSON; the assertions are here, with rasterio on the files they wrote.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import aeroseg
from aeroseg.windows import window_starts

ROOT = Path(__file__).resolve().parents[1]
QGIS_PYTHON = "/usr/bin/python3"
CHECKS = ROOT / "tests" / "qgis"
CLASSES = ["building", "road", "tree"]
ORIGIN, PIXEL = (500000.0, 5000000.0), 0.5  # the test scenes: EPSG:32633, 0.5 m pixels


def _has_qgis() -> bool:
    # Not a bare "import qgis": from the repository root that finds the qgis/ folder as a namespace package.
    try:
        done = subprocess.run(
            [QGIS_PYTHON, "-c", "from qgis.core import Qgis"], capture_output=True, timeout=120,
            cwd="/", env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


needs_qgis = pytest.mark.skipif(
    not _has_qgis(), reason="needs Debian's QGIS: apt-get install python3-qgis qgis-providers"
)


def _executable(path: Path, body: str = "exit 0") -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_build_plugin_zip(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "qgis" / "build_plugin.py"), "-o", str(tmp_path / "aeroseg_qgis.zip")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == str(tmp_path / "aeroseg_qgis.zip") and os.listdir(tmp_path) == [
        "aeroseg_qgis.zip"
    ]
    with zipfile.ZipFile(tmp_path / "aeroseg_qgis.zip") as archive:
        names = archive.namelist()
        metadata = archive.read("aeroseg_qgis/metadata.txt").decode()
    assert {"aeroseg_qgis/__init__.py", "aeroseg_qgis/provider.py", "aeroseg_qgis/icon.svg"} <= set(names)
    assert all(n.startswith("aeroseg_qgis/") and "__pycache__" not in n for n in names)
    assert f"version={aeroseg.__version__}" in metadata.splitlines()


# ---------------------------------------------------------------------------------- in QGIS
class QgisChecks:
    """Runs a check script in Debian's QGIS → what it reported. Made once: the scenes, a tiny checkpoint,
    the aeroseg wrapper, the plugin unpacked from its zip, a fresh QGIS profile."""

    def __init__(self, root: Path) -> None:
        from tests.helpers.tiny import build_tiny_model

        self.root = root
        build_tiny_model().save_pretrained(root / "checkpoint")
        self.scene, self.big = root / "scene.tif", root / "big.tif"
        _scene(self.scene, 96, 160, seed=1)
        _scene(self.big, 1024, 1024, seed=2)  # long enough to be cancelled while it runs
        (root / "bin").mkdir()
        src = Path(aeroseg.__file__).resolve().parents[1]  # the aeroseg under test
        wrapper = _executable(
            root / "bin" / "aeroseg",
            f'PYTHONPATH="{src}" HF_HUB_OFFLINE=1 exec "{sys.executable}" -m aeroseg "$@"',
        )
        package = root / "aeroseg_qgis.zip"
        subprocess.run(
            [sys.executable, str(ROOT / "qgis" / "build_plugin.py"), "-o", str(package)], check=True
        )
        with zipfile.ZipFile(package) as archive:
            archive.extractall(root / "plugins")
        home = root / "home"
        (home / "runtime").mkdir(parents=True, mode=0o700)
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AEROSEG_EXECUTABLE")}
        self.env.update(
            HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
            XDG_RUNTIME_DIR=str(home / "runtime"), QT_QPA_PLATFORM="offscreen", AEROSEG_EXECUTABLE=wrapper,
        )  # fmt: skip
        self.config = {"plugins": str(root / "plugins"), "scene": str(self.scene), "big": str(self.big)}
        self.config.update(checkpoint=str(root / "checkpoint"), bare_path="/usr/bin:/bin")

    def run(self, script: str, **config) -> dict:
        settings, report = self.root / f"{script}.json", self.root / f"{script}.report.json"
        settings.write_text(json.dumps(dict(self.config, **config)))
        done = subprocess.run(
            [QGIS_PYTHON, str(CHECKS / f"{script}.py"), str(settings), str(report)],
            env=self.env, cwd=str(self.root), capture_output=True, text=True, timeout=420,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(report.read_text())


@pytest.fixture(scope="module")
def qgis_checks(tmp_path_factory):
    return QgisChecks(tmp_path_factory.mktemp("qgis"))


def _scene(path: Path, height: int, width: int, seed: int) -> None:
    pixels = (np.random.default_rng(seed).random((3, height, width)) * 255).astype(np.uint8)
    profile = dict(driver="GTiff", height=height, width=width, count=3, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(path, "w", transform=from_origin(*ORIGIN, PIXEL, PIXEL), **profile) as ds:
        ds.write(pixels)


def _window_on_grid(path: str | Path, scene: Path) -> tuple[int, int, int, int]:
    """The window (column, row, width, height) of ``scene`` whose pixels the class raster at ``path`` lies
    on exactly (same CRS and pixel size, a whole-pixel offset); AssertionError otherwise."""
    with rasterio.open(path) as out, rasterio.open(scene) as ds:
        assert out.crs == ds.crs and out.count == 1 and out.dtypes[0] == "uint8" and out.nodata == 255
        assert (out.transform.a, out.transform.b, out.transform.d, out.transform.e) == (
            ds.transform.a, ds.transform.b, ds.transform.d, ds.transform.e
        )  # fmt: skip
        col, row = (
            (out.transform.c - ds.transform.c) / ds.transform.a,
            (out.transform.f - ds.transform.f) / ds.transform.e,
        )
        assert abs(col - round(col)) < 1e-9 and abs(row - round(row)) < 1e-9
        return round(col), round(row), out.width, out.height


def _classes_and_colours(path: str | Path) -> tuple[list[str], dict[str, str]]:
    with rasterio.open(path) as ds:
        names = json.loads(ds.tags()["AEROSEG_CLASSES"])
        colours = {
            f"{float(i)}": "#{:02x}{:02x}{:02x}".format(*ds.colormap(1)[i][:3]) for i in range(len(names))
        }
    return names, colours


@needs_qgis
def test_processing_algorithm_in_qgis(qgis_checks):
    out, cancel_out = qgis_checks.root / "out", qgis_checks.root / "cancel"
    out.mkdir()
    cancel_out.mkdir()
    extent = [ORIGIN[0] + 10, ORIGIN[1] - 30, ORIGIN[0] + 60, ORIGIN[1] - 10]  # x0, y0, x1, y1
    results = qgis_checks.run("check_processing", out=str(out), cancel_out=str(cancel_out), extent=extent)

    assert results["registered"]
    expected = ["INPUT", "CLASSES", "CHECKPOINT", "PRESET", "CLIP", "GUIDANCE", "WINDOW", "BANDS", "EXTENT"]
    assert set(expected + ["OUTPUT", "VECTOR", "SCORES"]) <= set(results["parameters"])

    # The whole layer: a class raster on the input's grid and CRS, loaded with a legend of the class names.
    whole = results["whole"]
    assert not whole["errors"] and whole["outputs"]["OUTPUT"] == str(out / "classes.tif")
    assert _window_on_grid(out / "classes.tif", qgis_checks.scene) == (0, 0, 160, 96)
    names, colours = _classes_and_colours(out / "classes.tif")
    assert names == CLASSES
    raster, polygons = whole["layers"]
    assert raster["source"] == str(out / "classes.tif") and raster["renderer"] == "QgsPalettedRasterRenderer"
    assert (
        raster["labels"] == {"0.0": "building", "1.0": "road", "2.0": "tree"} and raster["colours"] == colours
    )
    assert raster["legend"] == CLASSES and raster["name"] == "aeroseg: building, road, tree"
    assert polygons["source"].startswith(str(out / "polygons.gpkg"))
    assert polygons["renderer"] == "QgsCategorizedSymbolRenderer" and polygons["field"] == "class"
    assert polygons["labels"] == CLASSES
    assert any("tree" in line and "%" in line for line in whole["infos"])  # the class shares in the log

    # An extent: the pixels under it, on the layer's grid; the source recorded is the layer's file.
    assert not results["extent"]["errors"]
    assert _window_on_grid(out / "extent.tif", qgis_checks.scene) == (20, 20, 100, 40)
    with rasterio.open(out / "extent.tif") as ds:
        assert ds.tags()["AEROSEG_SOURCE"] == str(qgis_checks.scene)
        assert ds.tags()["AEROSEG_SOURCE_WINDOW"] == "20,20,100,40"
    assert results["extent"]["left"] == ["classes.tif", "extent.tif", "polygons.gpkg"]  # no work folder

    # Cancel while aeroseg writes: it is stopped and nothing is left.
    cancel = results["cancel"]
    assert any(".partial" in name for name in results["cancel_seen"])  # it was mid-run
    assert cancel["raised"] == "cancelled: aeroseg was stopped and its files removed"
    assert cancel["left"] == [] and os.listdir(cancel_out) == [] and cancel["running"] == []

    # No aeroseg: one line in the log (the toolbox dialog) and from processing.run, no traceback.
    missing = results["missing"]
    assert not missing["ok"] and len(missing["errors"]) == 1
    assert missing["errors"][0].startswith("aeroseg is not installed: ") and "\n" not in missing["errors"][0]
    assert missing["raised"] == missing["errors"][0]

    assert results["modules"] == []  # neither torch nor transformers, aeroseg or rasterio in QGIS's Python


@needs_qgis
def test_dock_second_class_list_reuses_the_cached_features(qgis_checks):
    window = 128
    zoom = [ORIGIN[0] + 10, ORIGIN[1] - 30, ORIGIN[0] + 60, ORIGIN[1] - 10]
    results_folder = qgis_checks.root / "dock"
    results = qgis_checks.run("check_dock", results=str(results_folder), window=window, zoom=zoom)

    assert results["menu"]["&aeroseg"] == [
        "aeroseg: segment by class names", "Settings…", "Set up aeroseg environment…"
    ]  # fmt: skip
    first, second, zoomed = results["runs"]
    assert [run["labels"] for run in results["runs"]] == [CLASSES, ["water", "field", "car"], CLASSES]
    for run in results["runs"]:
        assert run["messages"] == [] and Path(run["file"]).parent == results_folder
        assert _classes_and_colours(run["file"])[0] == run["labels"]
    assert _window_on_grid(first["file"], qgis_checks.scene) == (0, 0, 160, 96)
    assert _window_on_grid(second["file"], qgis_checks.scene) == (0, 0, 160, 96)

    # The worker's count of image encodings: every window of the first run was encoded, none of the second
    # class list's (its windows' features came from the cache).
    rows, columns = window_starts(96, window, 0.25), window_starts(160, window, 0.25)
    assert len(rows) == 1 and first["state"]["total"] == len(columns)
    assert first["state"]["encoded"] == len(columns) and second["state"]["encoded"] == 0
    assert first["state"]["cache_hits"] == 0 and second["state"]["cache_hits"] >= 1
    assert first["state"]["raster"] == second["state"]["raster"]
    assert "from the worker's cache" in second["status"] and "cache" not in first["status"]

    # Zoomed in: the pixels under the canvas (on the layer's grid), new windows, encoded.
    x0, y0, x1, y1 = (float(v) for v in zoomed["canvas"].replace(" : ", ",").split(","))
    col, row, width, height = _window_on_grid(zoomed["file"], qgis_checks.scene)
    expected = (
        math.floor((x0 - ORIGIN[0]) / PIXEL), math.floor((ORIGIN[1] - y1) / PIXEL),
        math.ceil((x1 - ORIGIN[0]) / PIXEL), math.ceil((ORIGIN[1] - y0) / PIXEL),
    )  # fmt: skip
    assert (col, row, col + width, row + height) == expected and width < 160
    assert zoomed["state"]["cache_hits"] == 0 and zoomed["state"]["encoded"] > 0

    assert len(results["missing"]["messages"]) == 1 and not results["missing"]["task"]
    assert results["missing"]["messages"][0].startswith("aeroseg is not installed: ")
    after = results["after_unload"]
    assert after["worker_exit"] is not None and not after["worker_folder"] and not after["provider"]
    assert results["modules"] == []
