"""The environment the plugin can create for aeroseg on first use: a virtual environment with PyTorch for
this machine's GPU (CPU otherwise) and aeroseg, so that QGIS's own Python never imports torch.

    python -m venv ENV
    ENV/bin/python -m pip install --upgrade pip
    ENV/bin/python -m pip install torch [--index-url https://download.pytorch.org/whl/cu128]
    ENV/bin/python -m pip install "aeroseg[serve]"

The GPU is found with ``nvidia-smi``: the highest CUDA version its driver supports picks PyTorch's wheel
index (:data:`CUDA_BUILDS`, after the table of https://pytorch.org/get-started/locally/). Without an NVIDIA
GPU, Linux gets PyTorch's CPU index (PyPI's Linux wheels are the CUDA build, gigabytes larger); Windows
and macOS get PyPI's wheels, which are the CPU build there (with MPS for Apple GPUs on macOS).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PACKAGE = "aeroseg[serve]"  # serve: the long-lived worker of the dock
TORCH_INDEX = "https://download.pytorch.org/whl/{build}"
# (lowest CUDA version the driver must support, PyTorch wheel build), newest first.
CUDA_BUILDS = (((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"))
MIN_PYTHON = (3, 10)  # aeroseg's requires-python
_CUDA = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")


@dataclass
class Plan:
    """What creating the environment runs: (label, command) steps, and the aeroseg command it gives."""

    accelerator: str  # said to the user before anything is installed, e.g. "NVIDIA GPU, CUDA 12.8 (cu128)"
    executable: Path
    steps: list[tuple[str, list[str]]] = field(default_factory=list)


def driver_cuda(nvidia_smi_output: str) -> tuple[int, int] | None:
    """The CUDA version the NVIDIA driver supports, from the header of ``nvidia-smi``'s output."""
    match = _CUDA.search(nvidia_smi_output)
    return (int(match[1]), int(match[2])) if match else None


def detect_cuda() -> tuple[int, int] | None:
    """The CUDA version this machine's NVIDIA driver supports, or None (no NVIDIA GPU or no driver)."""
    try:
        done = subprocess.run(
            ["nvidia-smi"], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
            **({"creationflags": subprocess.CREATE_NO_WINDOW} if sys.platform == "win32" else {}),
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return driver_cuda(done.stdout) if done.returncode == 0 else None


def torch_build(cuda: tuple[int, int] | None, platform: str) -> tuple[str | None, str]:
    """PyTorch's wheel index for this machine (None: PyPI's default wheels) and what it runs on."""
    if cuda is not None and platform != "darwin":
        for lowest, build in CUDA_BUILDS:
            if cuda >= lowest:
                return TORCH_INDEX.format(build=build), f"NVIDIA GPU, CUDA {cuda[0]}.{cuda[1]} ({build})"
        oldest = CUDA_BUILDS[-1][0]
        reason = f"its driver supports CUDA {cuda[0]}.{cuda[1]}, PyTorch needs {oldest[0]}.{oldest[1]}"
        return _cpu(platform, f"CPU ({reason}: update the NVIDIA driver to use the GPU)")
    if platform == "darwin":
        return None, "macOS: PyPI's PyTorch (CPU; Apple GPUs through Device mps)"
    return _cpu(platform, "CPU (no NVIDIA GPU found)")


def _cpu(platform: str, label: str) -> tuple[str | None, str]:
    return (TORCH_INDEX.format(build="cpu") if platform.startswith("linux") else None), label


def environment_python(env: Path, platform: str) -> Path:
    return env / ("Scripts/python.exe" if platform == "win32" else "bin/python")


def environment_executable(env: Path, platform: str) -> Path:
    """The aeroseg command of the environment ``env``."""
    return env / ("Scripts/aeroseg.exe" if platform == "win32" else "bin/aeroseg")


def setup_plan(
    python: str,
    env: Path,
    *,
    cuda: tuple[int, int] | None,
    platform: str = sys.platform,
    package: str = DEFAULT_PACKAGE,
    torch_index: str | None = None,
) -> Plan:
    """The steps creating ``env`` with ``python`` (at least :data:`MIN_PYTHON`); ``torch_index`` overrides
    the wheel index chosen from ``cuda``."""
    index, accelerator = torch_build(cuda, platform)
    if torch_index:
        index, accelerator = torch_index, f"PyTorch from {torch_index}"
    env_python = str(environment_python(env, platform))
    pip = [env_python, "-m", "pip", "install", "--disable-pip-version-check"]
    plan = Plan(accelerator, environment_executable(env, platform))
    plan.steps.append(("creating the virtual environment", [python, "-m", "venv", str(env)]))
    plan.steps.append(("updating pip", [*pip, "--upgrade", "pip"]))
    plan.steps.append(("installing PyTorch", [*pip, "torch", *(["--index-url", index] if index else [])]))
    plan.steps.append((f"installing {package}", [*pip, package]))
    return plan


def python_version(python: str) -> tuple[int, int] | None:
    """The version of the interpreter ``python``, or None when it does not run."""
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True,
            timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        major, minor = done.stdout.split()
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def find_python(
    configured: str | None,
    *,
    which: Callable[[str], str | None] = shutil.which,
    prefix: str = sys.exec_prefix,
    platform: str = sys.platform,
    version: Callable[[str], tuple[int, int] | None] = python_version,
) -> str | None:
    """The interpreter that creates the environment: ``configured`` (the plugin's setting), else the first
    of ``python3`` and ``python`` on PATH and QGIS's own Python that is at least :data:`MIN_PYTHON`."""
    if configured and configured.strip():
        return configured.strip()
    own = os.path.join(prefix, "python.exe" if platform == "win32" else "bin/python3")
    for candidate in (which("python3"), which("python"), own):
        if candidate and (found := version(candidate)) is not None and found >= MIN_PYTHON:
            return candidate
    return None


def failure(step: str, lines: Sequence[str], message: str) -> str:
    """One line for a failed step, with the fix where it is a known one."""
    if any("ensurepip is not available" in line for line in lines):
        return (
            f"{step}: this Python has no venv module; install python3-venv (Debian, Ubuntu) or choose "
            "another Python in the aeroseg settings"
        )
    return f"{step}: {message}"
