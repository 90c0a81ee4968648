"""SED, SAN and SCAN on tiny sizes for the registry and entry-point tests: their backbones written to disk in
the formats ``from_config`` reads (so that ``aeroseg.build`` runs the real loading code), and official
``{"model": ...}`` checkpoint files rebuilt from the phase-1 fixtures (tiny models of the official code, every
tensor hashed from its key name)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from aeroseg.convert.sed import CLIP_PREFIX, infer_config
from aeroseg.convert.tokenizer import clip_tokenizer
from tests.helpers import sed_fixture, tiny_san, tiny_scan
from tests.helpers.hashed_weights import hashed_tensor

FAMILIES = ("sed", "san", "scan")
SCAN_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "scan_official.safetensors"
SAN_TINY = {k: v for k, v in tiny_san.tiny_san_config().to_dict().items() if k not in ("preset", "clip")}
SED_FIELDS = ("hidden_dim", "decoder_dims", "decoder_guidance_dims", "decoder_guidance_proj_dims")
SED_FIELDS += ("decoder_cost_dims", "kernel_sizes")

_SHARED: dict[str, Path] = {}


def write_backbones(root: Path) -> dict[str, Path]:
    """The tiny backbones under ``root``: SED's CLIP ConvNeXt (an open_clip file), SAN's and SCAN's CLIPs
    (transformers folders with the tokenizer) and SCAN's Swin (a transformers folder)."""
    from transformers.models.swin.modeling_swin import SwinModel

    from aeroseg.scan.swin_backbone import swin_config

    paths = {
        "sed_clip": root / "sed-clip" / "open_clip_pytorch_model.bin",
        "san_clip": root / "san-clip",
        "scan_clip": root / "scan-clip",
        "scan_swin": root / "scan-swin",
    }
    state = sed_fixture.official_state()
    paths["sed_clip"].parent.mkdir(parents=True)
    clip = {k[len(CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    torch.save(clip, paths["sed_clip"])
    tiny_san.tiny_clip(0).save_pretrained(paths["san_clip"])
    clip_tokenizer().save_pretrained(paths["san_clip"])
    tiny_scan.tiny_clip(0).save_pretrained(paths["scan_clip"])
    clip_tokenizer().save_pretrained(paths["scan_clip"])
    torch.manual_seed(0)
    SwinModel(swin_config(tiny_scan.tiny_config()), add_pooling_layer=False).save_pretrained(
        paths["scan_swin"]
    )
    return paths


def shared_backbones() -> dict[str, Path]:
    """:func:`write_backbones` once per test process, in a temporary folder removed at exit."""
    if not _SHARED:
        root = Path(tempfile.mkdtemp(prefix="aeroseg-tiny-families-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED.update(write_backbones(root))
    return _SHARED


def sed_overrides() -> dict[str, Any]:
    """The widths of the fixture's SED (read from its checkpoint) and its CLIP input side."""
    path = Path("fixture")
    config = infer_config(sed_fixture.official_state(), path, None)
    return {name: getattr(config, name) for name in SED_FIELDS} | {"clip_image_size": sed_fixture.clip_size()}


def overrides(family: str) -> dict[str, Any]:
    """Config overrides that put a preset of ``family`` on the tiny backbones."""
    paths = shared_backbones()
    if family == "sed":
        return sed_overrides() | {"clip": str(paths["sed_clip"])}
    if family == "san":
        return SAN_TINY | {"clip": str(paths["san_clip"])}
    tiny = dict(tiny_scan.TINY, swin_drop_path=0.0)
    return tiny | {"clip": str(paths["scan_clip"]), "swin": str(paths["scan_swin"])}


def official_checkpoint(family: str, path: Path) -> Path:
    """The phase-1 fixture of ``family`` as its official trainer writes it: ``{"model": state_dict, ...}``."""
    if family == "sed":
        return sed_fixture.write_checkpoint(path)
    if family == "san":
        return tiny_san.official_checkpoint(tiny_san.read_fixture()[1], "san", path)
    with safe_open(str(SCAN_FIXTURE), "pt") as f:
        meta = f.metadata()
    state = {key: hashed_tensor(key, shape) for key, shape in json.loads(meta["keys"])}
    state.update({key: torch.zeros(shape) for key, shape in json.loads(meta["buffers"])})
    torch.save({"model": state, "iteration": 119999}, path)
    return path


FILE_OVERRIDES = {
    "sed": {"clip_image_size": 384},  # the fixture's CLIP input side (SED.clip_resolution in its script)
    "san": {},
    "scan": {"test_size": 128},  # a shorter test side: the tiny model's reference protocol stays fast
}
"""Overrides a ``--config`` file gives the official tiny files (``model:``)."""
