"""The official SED fixture (``tests/fixtures/sed_official.safetensors``, made by
``tests/fixtures/make_sed_fixture.py``) and the tiny checkpoint rebuilt from it in SED's ``{"model": ...}``
layout."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors import safe_open

from tests.helpers.hashed_weights import hashed_state_dict

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sed_official.safetensors"


@functools.cache
def official() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The fixture's tensors and metadata."""
    with safe_open(str(FIXTURE), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def classes(n: int) -> list[str]:
    return json.loads(official()[1]["classes"])[:n]


def official_state(kind: str = "") -> dict[str, torch.Tensor]:
    """The fixture's checkpoint (``kind`` "" for the linear-head model, "mlp" for the mlp head), every tensor
    hashed from its key as the fixture script filled it."""
    key = f"{kind}.keys" if kind else "keys"
    return hashed_state_dict(json.loads(official()[1][key]))


def write_checkpoint(path: Path, kind: str = "") -> Path:
    """The checkpoint as SED's trainer writes it: ``{"model": state_dict, "iteration": N}``."""
    torch.save({"model": official_state(kind), "iteration": 79999}, path)
    return path


def clip_size() -> int:
    """The CLIP input side of the fixture (``SED.clip_resolution`` set to it by the script)."""
    return int(official()[1]["clip_size"])


def train_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The two 384² uint8 training images and their masks."""
    tensors = official()[0]
    images = tensors["train_images"].repeat_interleave(4, 2).repeat_interleave(4, 3)
    masks = tensors["masks"].repeat_interleave(4, 1).repeat_interleave(4, 2)
    return images, masks


def eval_image(name: str) -> torch.Tensor:
    """1×3×320×480 uint8: ``eval`` (textured) or ``blocks`` (four flat blocks)."""
    small = official()[0][f"{name}_image"]
    fy, fx = (4, 4) if name == "eval" else (160, 240)
    return small.repeat_interleave(fy, 1).repeat_interleave(fx, 2)[None]


def assert_matches(ours: torch.Tensor, theirs: torch.Tensor, tolerance: float = 1e-4) -> None:
    """Max |ours - theirs| within ``tolerance`` of max |theirs|."""
    assert ours.shape == theirs.shape, (tuple(ours.shape), tuple(theirs.shape))
    error = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    assert error < tolerance, f"max |ours - official| = {error:.2e} of max |official|"
