"""Tiny random backbones (the architectures of ``aeroseg._tiny``) written to disk in the transformers format,
and tiny AerOSeg models built from them.

The model-building code under test is the real one (``aeroseg.build`` loads these directories offline);
only the sizes are tiny, so that a forward pass on a 64×64 image takes milliseconds.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPModel, Sam2Model, Sam3Model, SamModel

import aeroseg
from aeroseg._tiny import (
    TINY_GUIDANCE_LAYERS,
    TINY_MODEL,
    tiny_clip_config,
    tiny_sam2_config,
    tiny_sam_config,
)
from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.variants import preset_config
from tests.helpers.tiny_sam3 import tiny_sam3_config


def write_tiny_backbones(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write tiny CLIP (with tokenizer files), SAM and SAM2 directories under ``root``; return their paths."""
    root = Path(root)
    paths = {name: root / name for name in ("clip", "sam", "sam2", "sam3")}
    if all((p / "config.json").exists() for p in paths.values()):
        return paths
    torch.manual_seed(seed)
    CLIPModel(tiny_clip_config()).save_pretrained(paths["clip"])
    clip_tokenizer().save_pretrained(paths["clip"])
    SamModel(tiny_sam_config()).save_pretrained(paths["sam"])
    Sam2Model(tiny_sam2_config()).save_pretrained(paths["sam2"])
    Sam3Model(tiny_sam3_config()).save_pretrained(paths["sam3"])
    return paths


def tiny_overrides(preset: str, paths: dict[str, Path]) -> dict[str, Any]:
    """Config overrides that put a preset on the tiny backbones."""
    config = preset_config(preset)
    overrides: dict[str, Any] = dict(TINY_MODEL, clip=str(paths["clip"]))
    if config.guidance_type in ("sam", "sam2", "sam3"):
        overrides["guidance"] = str(paths[config.guidance_type])
    if config.guidance_type in TINY_GUIDANCE_LAYERS:
        overrides["guidance_layers"] = TINY_GUIDANCE_LAYERS[config.guidance_type]
    return overrides


_SHARED: dict[str, Path] = {}


def shared_tiny_backbones() -> dict[str, Path]:
    """The tiny backbones, written once per test process into a temporary directory removed at exit."""
    if not _SHARED:
        root = Path(tempfile.mkdtemp(prefix="aeroseg-tiny-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED.update(write_tiny_backbones(root))
    return _SHARED


def build_tiny_model(tmp_path: Path | None = None, preset: str = "aeroseg", seed: int = 0, **overrides: Any):
    """A tiny AerOSeg of ``preset`` built through ``aeroseg.build`` from the shared tiny backbones
    (``tmp_path`` is accepted for symmetry with other fixtures and not used)."""
    paths = shared_tiny_backbones()
    torch.manual_seed(seed)
    return aeroseg.build(preset, **{**tiny_overrides(preset, paths), **overrides})
