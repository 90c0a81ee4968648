"""Processing algorithm ``aeroseg:segment``: a raster layer and class names → a class raster (and optional
polygons and scores) by ``aeroseg predict`` run as a subprocess.

The command writes into a private folder beside OUTPUT (``.aeroseg-qgis-*``); the files are moved to their
destinations when it succeeds, and the folder is removed whatever happens, so a cancelled or failed run
leaves nothing behind. An EXTENT is cut from the layer on its own pixel grid as a GDAL VRT in that folder,
so the class raster lies on the input's pixels.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from . import runner
from .executable import NotInstalled, find_executable
from .layers import (
    LayerError,
    class_table,
    cut_window,
    layer_box,
    layer_file,
    record_source,
    result_name,
    style_classes,
    style_polygons,
    style_when_loaded,
)
from .progress import parse_progress
from .settings import DEVICES, PRESETS, Settings
from .temporary import temporary_path
from .window import pixel_window

HELP = """Segments a raster layer into the classes you name, with aeroseg (open-vocabulary segmentation of
aerial and satellite images), run as a separate process: QGIS's Python never loads the model.<br><br>
<b>Classes</b>: comma-separated names; <i>tree|forest</i> gives a class with synonyms.<br>
<b>Checkpoint</b>: a model folder (or file) written by aeroseg train, or an original CAT-Seg / OVRS .pth;
empty: the <b>Preset</b>, a training-free model on public weights (downloaded once).<br>
<b>Extent</b>: only the pixels of the layer under it (e.g. the map canvas); empty: the whole layer.<br>
The class raster holds the class ids on the input's grid and CRS, with the colour map and the class names;
255 is nodata. The aeroseg command is the one in the plugin's settings, else AEROSEG_EXECUTABLE, else
aeroseg on PATH."""


class SegmentAlgorithm(QgsProcessingAlgorithm):
    def name(self) -> str:
        return "segment"

    def displayName(self) -> str:  # noqa: N802 (QGIS's names)
        return "Segment by class names"

    def shortHelpString(self) -> str:  # noqa: N802
        return HELP

    def createInstance(self) -> SegmentAlgorithm:  # noqa: N802
        return SegmentAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Raster layer"))
        self.addParameter(QgsProcessingParameterString("CLASSES", "Classes (comma-separated; a|b: synonyms)"))
        self.addParameter(
            QgsProcessingParameterFile(
                "CHECKPOINT", "Checkpoint (folder or file)", optional=True, fileFilter="All files (*)"
            )  # a folder is accepted too: the file filter adds no extension to its name
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "PRESET",
                "Preset (without a checkpoint)",
                options=list(PRESETS),
                defaultValue=PRESETS[0],
                usesStaticStrings=True,
            )  # fmt: skip
        )
        self.addParameter(_advanced(QgsProcessingParameterString("CLIP", "CLIP weights", optional=True)))
        self.addParameter(
            _advanced(QgsProcessingParameterString("GUIDANCE", "SAM weights (none: no SAM)", optional=True))
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "WINDOW",
                "Window (pixels)",
                QgsProcessingParameterNumber.Integer,
                defaultValue=512,
                minValue=32,
            )
        )
        self.addParameter(
            QgsProcessingParameterString("BANDS", "Bands for R,G,B (e.g. 3,2,1)", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterExtent("EXTENT", "Extent (empty: the whole layer)", optional=True)
        )
        self.addParameter(
            _advanced(
                QgsProcessingParameterNumber(
                    "BACKGROUND_THRESHOLD",
                    "Background below this score",
                    QgsProcessingParameterNumber.Double,
                    optional=True,
                    minValue=0.0,
                    maxValue=1.0,
                )  # fmt: skip
            )
        )
        self.addParameter(
            _advanced(
                QgsProcessingParameterEnum(
                    "DEVICE", "Device", options=list(DEVICES), defaultValue="auto", usesStaticStrings=True
                )
            )
        )
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Classes"))
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                "VECTOR", "Polygons", QgsProcessing.TypeVectorPolygon, optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination("SCORES", "Scores", optional=True, createByDefault=False)
        )

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        try:
            return self._segment(parameters, context, feedback)
        except (NotInstalled, runner.CommandError, LayerError, OSError) as error:
            raise QgsProcessingException(str(error)) from None
        except runner.Cancelled:
            raise QgsProcessingException("cancelled: aeroseg was stopped and its files removed") from None

    def _segment(self, parameters, context, feedback):
        executable = find_executable(Settings.load().executable)
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if layer is None:
            raise LayerError("INPUT: choose a raster layer")
        source = layer_file(layer)
        classes = self.parameterAsString(parameters, "CLASSES", context).strip()
        if not classes:
            raise LayerError("CLASSES: give class names, e.g. building, road, tree|forest")
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if Path(output).suffix.lower() not in (".tif", ".tiff"):
            raise LayerError(f"OUTPUT: {output} is not a .tif file")
        vector = self.parameterAsOutputLayer(parameters, "VECTOR", context) or None
        if vector and Path(vector).suffix.lower() not in (".gpkg", ".geojson"):
            raise LayerError(f"VECTOR: {vector} is neither a .gpkg nor a .geojson file")
        scores = self.parameterAsOutputLayer(parameters, "SCORES", context) or None
        if os.path.abspath(source) in {os.path.abspath(p) for p in (output, vector, scores) if p}:
            raise LayerError(f"an output would overwrite the input {source}")
        window = self._window(parameters, context, layer)

        Path(output).parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".aeroseg-qgis-", dir=Path(output).parent))
        try:
            image = source
            if window or not os.path.isfile(source):  # aeroseg predict reads local files and http(s) URLs
                whole = (0, 0, layer.width(), layer.height())
                image = cut_window(source, window or whole, str(work / "input.vrt"))
            polygons = work / f"polygons{Path(vector).suffix.lower()}" if vector else None
            command = [executable, "predict", image, *self._options(parameters, context)]
            command += ["-o", str(work / "classes.tif"), "--json", str(work / "run.json")]
            command += ["--scores"] if scores else []
            command += ["--vector", str(polygons)] if polygons else []
            feedback.pushCommandInfo(" ".join(command))
            feedback.setProgressText("aeroseg: loading the model")

            def show(line: str) -> None:
                found = parse_progress(line)
                if found is not None:
                    feedback.setProgress(found.percent)
                feedback.pushConsoleInfo(line)

            runner.run(command, on_line=show, is_canceled=feedback.isCanceled)
            record_source(str(work / "classes.tif"), source, window)
            table = class_table(str(work / "classes.tif"))
            _report(work / "run.json", feedback)
            _move(work / "classes.tif", Path(output))
            if scores:
                _move(work / "classes_scores.tif", Path(scores))
            if polygons:
                _move(polygons, Path(vector))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        name = result_name(table)
        style_when_loaded(context, output, name, lambda layer: style_classes(layer, table))
        if vector:
            style_when_loaded(
                context, vector, f"{name} (polygons)", lambda layer: style_polygons(layer, table)
            )
        return {"OUTPUT": output, "VECTOR": vector, "SCORES": scores}

    def _window(self, parameters, context, layer):
        """The pixel window of EXTENT (None: the whole layer)."""
        if parameters.get("EXTENT") in (None, ""):
            return None
        extent = self.parameterAsExtent(parameters, "EXTENT", context, layer.crs())
        if extent.isNull():
            return None
        box = extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()
        window = pixel_window(layer_box(layer), layer.width(), layer.height(), box)
        if window is None:
            raise LayerError(f"EXTENT does not overlap {layer.name()}")
        return None if window == (0, 0, layer.width(), layer.height()) else window

    def _options(self, parameters, context) -> list[str]:
        """The model, reading and window options of ``aeroseg predict``."""
        options = ["--classes", self.parameterAsString(parameters, "CLASSES", context).strip()]
        checkpoint = self.parameterAsFile(parameters, "CHECKPOINT", context)
        if checkpoint:
            options += ["--checkpoint", checkpoint]
        else:
            preset = self.parameterAsEnumString(parameters, "PRESET", context) or PRESETS[0]
            options += ["--preset", preset]
            for name, flag in (("CLIP", "--clip"), ("GUIDANCE", "--guidance")):
                value = self.parameterAsString(parameters, name, context).strip()
                options += [flag, value] if value else []
        bands = self.parameterAsString(parameters, "BANDS", context).strip()
        options += ["--bands", bands.replace(" ", "")] if bands else []
        if parameters.get("BACKGROUND_THRESHOLD") is not None:
            threshold = self.parameterAsDouble(parameters, "BACKGROUND_THRESHOLD", context)
            options += ["--background-threshold", repr(threshold)]
        options += ["--window", str(self.parameterAsInt(parameters, "WINDOW", context))]
        options += ["--device", self.parameterAsEnumString(parameters, "DEVICE", context) or "auto"]
        return options


def _advanced(parameter: QgsProcessingParameterDefinition) -> QgsProcessingParameterDefinition:
    parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


def _report(summary: Path, feedback) -> None:
    """The class shares of the run, into the log."""
    record = json.loads(summary.read_text())["images"][0]
    pixels = {k: v for k, v in record.get("pixels", {}).items() if k != "nodata"}
    total = sum(pixels.values()) or 1
    feedback.pushInfo("aeroseg: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in pixels.items()))
    if "polygons" in record:
        feedback.pushInfo(f"aeroseg: {record['polygons']} polygons")


def _move(source: Path, target: Path) -> None:
    """Move a finished file to its destination (renamed when on the same file system, else copied first
    under a temporary name)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        partial = temporary_path(target)
        try:
            shutil.copyfile(source, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
