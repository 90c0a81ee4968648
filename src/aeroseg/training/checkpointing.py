"""Checkpoints that a run resumes from exactly, written atomically.

``RUN/checkpoints/step_000500/`` holds the model as :meth:`AerOSeg.save_pretrained` writes it (``config.json``
+ ``model.safetensors``: the folder is itself a loadable model) and ``training_state.pt``: optimizer,
scheduler and grad-scaler state dicts, every rank's RNG states as uint8 tensors, the step and the data
position. The state holds only tensors, numbers, strings, lists and dicts, so ``torch.load(...,
weights_only=True)`` reads it. A checkpoint is written into a hidden temporary folder and renamed into place,
so a killed run never leaves a partial one under a ``step_*`` name.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch

from aeroseg.atomic import atomic_dir
from aeroseg.errors import CheckpointError
from aeroseg.weight_files import load_weights_only

STATE_FILE = "training_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def save_checkpoint(model: Any, state: dict[str, Any], run_dir: Path, step: int, keep: int) -> Path:
    """Write ``RUN/checkpoints/step_NNNNNN`` (model + ``state``) atomically; keep the ``keep`` newest (0: all)."""
    final = run_dir / "checkpoints" / f"step_{step:06d}"
    with atomic_dir(final, replace=True) as tmp:
        model.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)
    if keep:
        for stale in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(stale)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def find_checkpoint(run_dir: Path, resume: str) -> Path:
    """The checkpoint ``--resume`` names: ``latest`` (newest in ``RUN/checkpoints``) or a checkpoint folder."""
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise CheckpointError(f"nothing to resume: no checkpoint in {run_dir / 'checkpoints'}")
        return found[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(
            f"{path} is not a training checkpoint (no {STATE_FILE}); pass RUN/checkpoints/step_*"
        )
    return path


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    """The training state of a checkpoint, read without unpickling arbitrary objects."""
    return load_weights_only(checkpoint / STATE_FILE, "a training state written by aeroseg train")


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's torch RNG states (CPU, and the CUDA device in use) as uint8 tensors."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
