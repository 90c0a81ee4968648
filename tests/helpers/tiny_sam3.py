"""A tiny random SAM 3 (``transformers.Sam3Model``) written to disk in the transformers format."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Sam3Model

from aeroseg._tiny import TINY_SAM3_SIZE, tiny_sam3_config

__all__ = ["TINY_SAM3_SIZE", "tiny_sam3_config", "write_tiny_sam3"]


def write_tiny_sam3(root: Path, seed: int = 0) -> Path:
    """Save a tiny random SAM 3 under ``root/sam3`` (once) and return the directory."""
    path = Path(root) / "sam3"
    if not (path / "config.json").exists():
        torch.manual_seed(seed)
        Sam3Model(tiny_sam3_config()).save_pretrained(path)
    return path
