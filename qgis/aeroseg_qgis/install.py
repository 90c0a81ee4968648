"""First use: offer to create aeroseg's environment, and create it in a background task.

The steps are those of :func:`aeroseg_qgis.environment.setup_plan`; their output goes to ``setup.log``
beside the environment folder, and the aeroseg command of the new environment becomes the plugin's
executable setting.
"""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsTask
from qgis.PyQt.QtWidgets import QMessageBox

from . import environment, runner
from .settings import Settings


def offer(parent, message_bar, reason: str) -> bool:
    """Ask whether to create the environment (``reason``: why aeroseg cannot run); start it when the user
    agrees. False, with ``reason`` in the message bar, when not."""
    settings = Settings.load()
    python = environment.find_python(settings.python)
    if python is None:
        message_bar.pushMessage(
            "aeroseg", f"{reason} (no Python {'.'.join(map(str, environment.MIN_PYTHON))} or newer was found "
            "to create its environment: set one in the aeroseg settings)", level=Qgis.Warning,
        )  # fmt: skip
        return False
    plan = _plan(settings, python)
    question = (
        f"{reason}.\n\nCreate aeroseg's environment in {settings.environment_folder()} now?\n\n"
        f"It installs PyTorch for this machine ({plan.accelerator}) and {settings.package} with pip: "
        "a download of one to several GB, some minutes. QGIS stays usable meanwhile."
    )
    answer = QMessageBox.question(
        parent, "aeroseg", question, QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes
    )
    if answer != QMessageBox.Yes:
        message_bar.pushMessage("aeroseg", reason, level=Qgis.Warning)
        return False
    start(message_bar, plan, settings)
    return True


def _plan(settings: Settings, python: str) -> environment.Plan:
    return environment.setup_plan(
        python, Path(settings.environment_folder()), cuda=environment.detect_cuda(), platform=sys.platform,
        package=settings.package, torch_index=settings.torch_index or None,
    )  # fmt: skip


def start(
    message_bar, plan: environment.Plan | None = None, settings: Settings | None = None
) -> SetupTask | None:
    """Create the environment in a background task (QGIS's task bar shows its progress)."""
    settings = settings or Settings.load()
    if plan is None:
        python = environment.find_python(settings.python)
        if python is None:
            message_bar.pushMessage(
                "aeroseg",
                "no Python 3.10 or newer found: set one in the aeroseg settings",
                level=Qgis.Warning,
            )
            return None
        plan = _plan(settings, python)
    task = SetupTask(plan, Path(settings.environment_folder()).parent / "setup.log", message_bar)
    _RUNNING.add(task)  # a QgsTask whose Python object is collected dies with it
    QgsApplication.taskManager().addTask(task)
    message_bar.pushMessage(
        "aeroseg", f"creating its environment ({plan.accelerator}); see the task bar", level=Qgis.Info
    )
    return task


_RUNNING: set = set()


class SetupTask(QgsTask):
    def __init__(self, plan: environment.Plan, log: Path, message_bar) -> None:
        super().__init__("Setting up aeroseg", QgsTask.CanCancel)
        self.plan, self.log, self.message_bar = plan, log, message_bar
        self.error: str | None = None

    def run(self) -> bool:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w", encoding="utf-8") as log:
            for i, (label, command) in enumerate(self.plan.steps):
                self.setProgress(100 * i / len(self.plan.steps))
                self.setDescription(f"aeroseg: {label}")
                self.error = self._step(label, command, log)
                if self.error is not None:
                    return False
        if not self.plan.executable.exists():
            self.error = f"the environment has no {self.plan.executable}"
            return False
        return True

    def _step(self, label: str, command: list[str], log) -> str | None:
        """Run one step, its output into the log; None, or what went wrong."""
        log.write("$ " + " ".join(command) + "\n")
        lines: deque[str] = deque(maxlen=40)

        def keep(line: str) -> None:
            lines.append(line)
            log.write(line + "\n")

        try:
            runner.run(command, on_line=keep, is_canceled=self.isCanceled)
        except runner.Cancelled:
            return "cancelled"
        except runner.CommandError as error:
            return environment.failure(label, list(lines), str(error))
        return None

    def finished(self, ok: bool) -> None:
        _RUNNING.discard(self)
        if ok:
            settings = Settings.load()
            settings.executable = str(self.plan.executable)
            settings.save()
            self.message_bar.pushMessage("aeroseg", f"installed: {self.plan.executable}", level=Qgis.Success)
        else:
            self.message_bar.pushMessage(
                "aeroseg", f"setting up failed: {self.error} (log: {self.log})", level=Qgis.Critical
            )
