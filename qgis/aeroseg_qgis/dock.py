"""The dock: pick a raster layer, type class names, Segment the canvas extent or the whole layer.

Runs go to a long-lived ``aeroseg serve`` worker (:mod:`aeroseg_qgis.serve_client`) started on first use
with the model of the settings; it keeps the image features of the windows it encoded, so another class
list on the same extent runs only the class-dependent part of the model. The pixels to segment (the canvas
extent on the layer's grid, or the whole layer) are copied as a GeoTIFF into the worker's private folder,
the only one it reads. Each run is a background task (QGIS stays usable; Cancel stops it), and its class
raster is written to the results folder and loaded above the layer, styled with the class names.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateTransform,
    QgsCsException,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsTask,
)
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import pyqtSignal, pyqtSlot
from qgis.PyQt.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from . import install, runner
from .executable import NotInstalled, find_executable
from .layers import LayerError, class_table, cut_window, layer_box, layer_file, result_name, style_classes
from .serve_client import ServeError, ServeWorker
from .settings import Settings, SettingsDialog
from .window import pixel_window

MAX_CUT_PIXELS = 100_000_000  # the dock copies the pixels it segments into the worker's folder (~300 MB RGB)


class SegmentTask(QgsTask):
    """One run of the dock in the background: start the worker if needed, cut the extent, segment, download."""

    def __init__(
        self, worker: ServeWorker, source: str, window, classes: str, target: Path, on_finished
    ) -> None:
        super().__init__("aeroseg: segmenting", QgsTask.CanCancel)
        self.worker, self.source, self.window, self.classes, self.target = (
            worker,
            source,
            window,
            classes,
            target,
        )
        self.on_finished = on_finished
        self.phase = "starting"
        self.state: dict | None = None  # the finished run as the worker reports it (classes, cache_hits, ...)
        self.error: str | None = None

    def run(self) -> bool:
        try:
            if not self.worker.running:
                self._phase("loading the model (first run)")
                self.worker.start(is_canceled=self.isCanceled)
            cut = self.worker.root / f"{_cut_name(self.source, self.window)}.tif"
            if not cut.exists():
                self._phase("copying the extent")
                cut_window(self.source, self.window, str(cut), self.isCanceled)
            if self.isCanceled():
                return False
            raster = self.worker.open(cut)
            job = self.worker.segment(raster["id"], self.classes)
            self._phase("segmenting")
            self.state = self.worker.wait(job["id"], is_canceled=self.isCanceled, on_progress=self._windows)
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self.worker.download(job["id"], self.target)
            return True
        except runner.Cancelled:
            return False
        except (NotInstalled, runner.CommandError, ServeError, LayerError, OSError) as error:
            self.error = None if self.isCanceled() else str(error)
            return False

    def _phase(self, text: str) -> None:
        self.phase = text
        self.setProgress(0)

    def _windows(self, done: int, total: int) -> None:
        self.phase = f"segmenting: {done}/{total} windows"
        self.setProgress(100 * done / total if total else 0)

    def finished(self, ok: bool) -> None:
        self.on_finished(self, ok)


def _cut_name(source: str, window) -> str:
    """A name for the copy of ``window`` of ``source``: the same extent of an unchanged file gets the same
    one, so the worker finds its features cached."""
    stamp = os.path.getmtime(source) if os.path.exists(source) else 0
    return hashlib.sha1(f"{source}|{window}|{stamp}".encode()).hexdigest()[:16]


class SegmentDock(QgsDockWidget):
    done = pyqtSignal()  # after every run, whether it succeeded, failed or was cancelled

    def __init__(self, iface, parent=None) -> None:
        super().__init__("aeroseg", parent)
        self.setObjectName("AerosegDock")
        self.iface = iface
        self.worker: ServeWorker | None = None
        self.task: SegmentTask | None = None
        self.last_state: dict | None = None  # the last finished run, as the worker reported it
        self.last_layer: QgsRasterLayer | None = None

        self.layer = QgsMapLayerComboBox()
        self.layer.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.classes = QLineEdit()
        self.classes.setPlaceholderText("building, road, tree|forest, water")
        self.classes.returnPressed.connect(self.segment)
        self.canvas_extent, self.whole_layer = QRadioButton("Canvas extent"), QRadioButton("Whole layer")
        self.canvas_extent.setChecked(True)
        self.segment_button, self.cancel_button = QPushButton("Segment"), QPushButton("Cancel")
        self.segment_button.clicked.connect(self.segment)
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        settings_button = QPushButton("Settings…")
        settings_button.clicked.connect(self.edit_settings)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel()
        self.status.setWordWrap(True)

        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(QLabel("Layer"))
        layout.addWidget(self.layer)
        layout.addWidget(QLabel("Classes (comma-separated; a|b: synonyms)"))
        layout.addWidget(self.classes)
        scope = QHBoxLayout()
        scope.addWidget(self.canvas_extent)
        scope.addWidget(self.whole_layer)
        layout.addLayout(scope)
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(settings_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.setWidget(body)
        self._show_model()

    # ------------------------------------------------------------------------------------------ runs
    @pyqtSlot()
    def segment(self) -> None:
        if self.task is not None:
            return
        layer, classes = self.layer.currentLayer(), self.classes.text().strip()
        if layer is None or not classes:
            self._error("choose a raster layer and type class names" if classes else "type class names")
            return
        settings = Settings.load()
        try:
            executable = find_executable(settings.executable)
        except NotInstalled as error:
            if install.offer(self, self.iface.messageBar(), str(error)):
                self.status.setText("setting up aeroseg; press Segment again when it is done")
            return
        try:
            source, window = layer_file(layer), self._window(layer)
        except LayerError as error:
            self._error(str(error))
            return
        worker = self._worker(executable, settings.serve_arguments())
        target = _result_path(Path(settings.results_folder()), layer.name())
        self.task = SegmentTask(worker, source, window, classes, target, self._finished)
        self.task.progressChanged.connect(self._progress)
        self.segment_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText("starting")
        QgsApplication.taskManager().addTask(self.task)

    @pyqtSlot()
    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _window(self, layer: QgsRasterLayer):
        """The pixel window to segment: the canvas extent on the layer's grid, or the whole layer."""
        if self.whole_layer.isChecked():
            return _checked((0, 0, layer.width(), layer.height()))
        canvas = self.iface.mapCanvas()
        transform = QgsCoordinateTransform(
            canvas.mapSettings().destinationCrs(), layer.crs(), QgsProject.instance()
        )
        try:
            extent = transform.transformBoundingBox(canvas.extent())
        except QgsCsException:
            raise LayerError(f"the canvas extent cannot be expressed in the CRS of {layer.name()}") from None
        box = extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()
        window = pixel_window(layer_box(layer), layer.width(), layer.height(), box)
        if window is None:
            raise LayerError(
                f"the canvas shows no part of {layer.name()}: pan onto it, or segment the whole layer"
            )
        return _checked(window)

    def _worker(self, executable: str, arguments: list[str]) -> ServeWorker:
        """The worker for this model: the current one, or a new one (another model, or it stopped)."""
        worker = self.worker
        stale = worker is not None and (
            (worker.process is not None and not worker.running)
            or worker.command[0] != executable
            or worker.arguments != tuple(arguments)
        )
        if stale:
            worker.stop()
        if worker is None or stale:
            self.worker = ServeWorker(executable, arguments)
        return self.worker

    @pyqtSlot(float)
    def _progress(self, value: float) -> None:
        if self.task is not None:
            self.progress.setValue(int(value))
            self.status.setText(self.task.phase)

    def _finished(self, task: SegmentTask, ok: bool) -> None:
        self.task = None
        self.segment_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if ok:
            self._load(task)
        elif task.error:
            self._error(task.error)
        else:
            self.status.setText("cancelled")
        self.done.emit()

    def _load(self, task: SegmentTask) -> None:
        try:
            table = class_table(str(task.target))
        except LayerError as error:
            self._error(str(error))
            return
        layer = QgsRasterLayer(str(task.target), result_name(table))
        style_classes(layer, table)
        QgsProject.instance().addMapLayer(layer)
        self.last_state, self.last_layer = task.state, layer
        self.progress.setValue(100)
        total = task.state["total"]
        reuse = "; image features reused from the worker's cache" if task.state.get("cache_hits") else ""
        self.status.setText(f"{total} window{'s' if total != 1 else ''}{reuse} → {task.target.name}")

    def _error(self, message: str) -> None:
        self.status.setText(message)
        self.iface.messageBar().pushMessage("aeroseg", message, level=Qgis.Critical)

    # ----------------------------------------------------------------------------------- settings
    @pyqtSlot()
    def edit_settings(self) -> None:
        dialog = SettingsDialog(self, on_setup=lambda: install.start(self.iface.messageBar()))
        if dialog.exec_():
            self._show_model()

    def _show_model(self) -> None:
        settings = Settings.load()
        model = settings.checkpoint or settings.preset
        self.status.setText(f"model: {model}, device {settings.device}, window {settings.window} px")

    def shutdown(self) -> None:
        """Cancel the run and stop the worker (the plugin is unloaded or QGIS closes)."""
        if self.task is not None:
            self.task.cancel()
            self.task.waitForFinished(30_000)
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


def _checked(window):
    """``window``, unless it is too large to copy for the worker."""
    pixels = window[2] * window[3]
    if pixels > MAX_CUT_PIXELS:
        raise LayerError(
            f"{pixels / 1e6:.0f} Mpx is more than the dock copies ({MAX_CUT_PIXELS / 1e6:.0f} Mpx): zoom in, "
            "or run Processing ▸ aeroseg ▸ Segment by class names, which reads the layer window by window"
        )
    return window


def _result_path(folder: Path, layer_name: str) -> Path:
    """A new file name in ``folder`` for a class raster of ``layer_name``."""
    stem = re.sub(r"[^\w.-]+", "_", layer_name).strip("._") or "layer"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = folder / f"{stem}_aeroseg_{stamp}.tif", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}_aeroseg_{stamp}_{n}.tif"
    return path
