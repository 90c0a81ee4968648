"""The plugin's settings (QGIS settings under ``aeroseg/``) and their dialog (Plugins ▸ aeroseg ▸ Settings).

The executable and the environment are the plugin's; the model and window settings are those of the dock's
worker (the Processing algorithm takes its own as parameters).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from qgis.core import QgsApplication, QgsProject, QgsSettings
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from .environment import DEFAULT_PACKAGE

PRESETS = ("training-free", "segearth-ov", "segearth-ov3")  # the models aeroseg runs without a checkpoint
DEVICES = ("auto", "cpu", "cuda")
_GROUP = "aeroseg"


@dataclass
class Settings:
    executable: str = ""  # the aeroseg command; empty: $AEROSEG_EXECUTABLE, else aeroseg on PATH
    checkpoint: str = ""  # the dock's model: a checkpoint folder or file; empty: the preset
    preset: str = "training-free"  # the model without a checkpoint
    clip: str = (
        ""  # CLIP weights of the training-free model (hub id, folder or file); empty: aeroseg's default
    )
    guidance: str = ""  # its SAM weights, or none; empty: aeroseg's default
    device: str = "auto"  # auto: the GPU when there is one
    window: int = 512  # window side in pixels
    results: str = ""  # folder of the dock's class rasters; empty: see results_folder()
    python: str = ""  # interpreter that creates the environment; empty: python3 on PATH, else QGIS's
    environment: str = ""  # folder of the environment the plugin creates; empty: see environment_folder()
    package: str = DEFAULT_PACKAGE  # what pip installs there: a name, a wheel, a folder or a git URL
    torch_index: str = ""  # PyTorch wheel index; empty: chosen for the GPU found

    @classmethod
    def load(cls) -> Settings:
        stored = QgsSettings()
        values = {}
        for item in dataclasses.fields(cls):
            value = stored.value(f"{_GROUP}/{item.name}", item.default)
            values[item.name] = int(value) if isinstance(item.default, int) else str(value or "")
        return cls(**values)

    def save(self) -> None:
        stored = QgsSettings()
        for item in dataclasses.fields(self):
            stored.setValue(f"{_GROUP}/{item.name}", getattr(self, item.name))

    def serve_arguments(self) -> list[str]:
        """The model, device and window options of the dock's ``aeroseg serve`` worker."""
        if self.checkpoint:
            arguments = ["--checkpoint", self.checkpoint]
        else:
            arguments = ["--preset", self.preset] if self.preset != "training-free" else []
            arguments += ["--clip", self.clip] if self.clip else []
            arguments += ["--guidance", self.guidance] if self.guidance else []
        return [*arguments, "--device", self.device, "--window", str(self.window)]

    def environment_folder(self) -> str:
        return self.environment or os.path.join(
            QgsApplication.qgisSettingsDirPath(), "aeroseg", "environment"
        )

    def results_folder(self) -> str:
        """Where the dock writes its class rasters: the setting, else ``aeroseg/`` beside the saved project,
        else ``aeroseg/results`` in the QGIS profile."""
        if self.results:
            return self.results
        home = QgsProject.instance().homePath()
        return (
            os.path.join(home, "aeroseg")
            if home
            else os.path.join(QgsApplication.qgisSettingsDirPath(), "aeroseg", "results")
        )


class SettingsDialog(QDialog):
    """Edit the settings; "Set up environment" creates the environment with the values shown."""

    def __init__(self, parent=None, on_setup=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("aeroseg settings")
        settings = Settings.load()
        self.executable = _file(settings.executable, "aeroseg command (empty: AEROSEG_EXECUTABLE, else PATH)")
        self.checkpoint = _file(settings.checkpoint, "checkpoint folder or file (empty: the preset)")
        self.preset = _combo(PRESETS, settings.preset, editable=False)
        self.clip, self.guidance = QLineEdit(settings.clip), QLineEdit(settings.guidance)
        self.clip.setPlaceholderText("aeroseg's default")
        self.guidance.setPlaceholderText("aeroseg's default; none: no SAM")
        self.device = _combo(DEVICES, settings.device, editable=True)
        self.window = QSpinBox()
        self.window.setRange(32, 8192)
        self.window.setSingleStep(32)
        self.window.setValue(settings.window)
        self.results = _file(settings.results, settings.results_folder(), folder=True)
        self.python = _file(settings.python, "python3 on PATH, else QGIS's Python")
        self.environment = _file(settings.environment, settings.environment_folder(), folder=True)
        self.package, self.torch_index = QLineEdit(settings.package), QLineEdit(settings.torch_index)
        self.torch_index.setPlaceholderText("chosen for the GPU found")

        model = QFormLayout()
        model.addRow("aeroseg executable", self.executable)
        model.addRow("Checkpoint", self.checkpoint)
        model.addRow("Preset (no checkpoint)", self.preset)
        model.addRow("CLIP weights", self.clip)
        model.addRow("SAM weights", self.guidance)
        model.addRow("Device", self.device)
        model.addRow("Window (pixels)", self.window)
        model.addRow("Dock results folder", self.results)
        environment = QFormLayout()
        environment.addRow("Python", self.python)
        environment.addRow("Folder", self.environment)
        environment.addRow("Package", self.package)
        environment.addRow("PyTorch index", self.torch_index)
        setup = QPushButton("Set up environment now")
        setup.setEnabled(on_setup is not None)
        setup.clicked.connect(lambda: (self.accept(), on_setup()))
        environment.addRow(setup)
        box = QGroupBox("Environment created by the plugin")
        box.setLayout(environment)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(model)
        layout.addWidget(box)
        layout.addWidget(buttons)
        self.accepted.connect(self.save)

    def save(self) -> None:
        Settings(
            executable=self.executable.filePath(), checkpoint=self.checkpoint.filePath(),
            preset=self.preset.currentText(), clip=self.clip.text().strip(), guidance=self.guidance.text().strip(),
            device=self.device.currentText().strip() or "auto", window=self.window.value(),
            results=self.results.filePath(), python=self.python.filePath(), environment=self.environment.filePath(),
            package=self.package.text().strip() or DEFAULT_PACKAGE, torch_index=self.torch_index.text().strip(),
        ).save()  # fmt: skip


def _file(value: str, placeholder: str, folder: bool = False) -> QgsFileWidget:
    widget = QgsFileWidget()
    widget.setStorageMode(QgsFileWidget.GetDirectory if folder else QgsFileWidget.GetFile)
    widget.setFilePath(value)
    widget.lineEdit().setPlaceholderText(placeholder)
    return widget


def _combo(values: tuple[str, ...], current: str, *, editable: bool) -> QComboBox:
    combo = QComboBox()
    combo.addItems(values)
    combo.setEditable(editable)
    combo.setCurrentText(current)
    return combo
