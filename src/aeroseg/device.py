"""The device a command runs on: one rule for every verb and the Python API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aeroseg.errors import UserError

if TYPE_CHECKING:
    import torch

HELP = "auto (the first GPU when there is one, else the CPU), cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``torch.device`` of ``name``: "auto" or None is the first CUDA GPU when there is one, else the CPU;
    any other name must be a device this machine has (a one-line :class:`UserError` otherwise)."""
    import torch  # not at import time: the command line names devices before it loads torch

    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use {HELP}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name} asked for but no CUDA GPU is available; use --device cpu")
    if device.type != "cpu":
        try:
            torch.empty(1, device=device)
        except (RuntimeError, AssertionError) as error:
            reason = (str(error).strip() or type(error).__name__).splitlines()[0]
            raise UserError(f"device {name!r} is not usable here ({reason}); use --device cpu") from None
    return device
