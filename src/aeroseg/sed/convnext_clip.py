"""The CLIP ConvNeXt SED builds on (open_clip ``convnext_base_w_320`` / ``convnext_large_d_320``), assembled
from ``transformers`` parts: its architecture, random construction, and loading of the original files.

An architecture is a dict (shipped as ``assets/arch/convnext-clip/<name>.json``, stored in every SED
checkpoint): ``vision`` (``ConvNextConfig`` fields), ``text`` (``CLIPTextConfig`` fields), ``embed_dim``,
``head`` ("linear" or "mlp", open_clip's ``timm_proj``) and ``head_dropout`` (``timm_drop``). The two shipped:

- ``clip-convnext-base-w-320``: open_clip ``convnext_base_w_320`` (ConvNeXt-B trunk, text width 640)
- ``clip-convnext-large-d-320``: open_clip ``convnext_large_d_320`` (ConvNeXt-L trunk, MLP head, stochastic
  depth and head dropout 0.1, text width 768 × 16 blocks)

A source is an existing file (open_clip's ``open_clip_pytorch_model.bin`` / ``.safetensors``), a directory
holding one, or a Hugging Face hub id whose repository holds one.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from torch import nn
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, ConvNextConfig, ConvNextModel
from transformers.initialization import no_init_weights

from aeroseg.convert._checkpoint import StateDict, read_state_dict
from aeroseg.convert.arch import ARCH_DIR
from aeroseg.convert.convnext_clip import EXPECTED, convert_state, infer_architecture, is_convnext_clip
from aeroseg.errors import CheckpointError, UserError
from aeroseg.hub import hub_file, hub_offline
from aeroseg.sed.hierarchical_encoder import VisualHead

CONVNEXT_CLIP_DIR = ARCH_DIR / "convnext-clip"
ARCHITECTURES = ("clip-convnext-base-w-320", "clip-convnext-large-d-320")
HUB_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)  # open_clip's names, tried in order
ATTENTION = "sdpa"


def load_architecture(name: str) -> dict[str, Any]:
    """The shipped architecture ``name`` (one of :data:`ARCHITECTURES`)."""
    if name not in ARCHITECTURES:
        raise UserError(
            f"unknown CLIP ConvNeXt architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}"
        )
    return json.loads((CONVNEXT_CLIP_DIR / f"{name}.json").read_text(encoding="utf-8"))


class ConvNextClipTowers(nn.Module):
    """The three parts of a CLIP ConvNeXt: ``trunk`` (ConvNextModel), ``head`` (visual projection) and ``text``
    (CLIPTextModelWithProjection), with the architecture they were built from."""

    def __init__(self, arch: dict[str, Any], *, initialise: bool = True) -> None:
        super().__init__()
        self.arch = copy.deepcopy(arch)
        vision, text = ConvNextConfig(**arch["vision"]), CLIPTextConfig(**arch["text"])
        if initialise:
            self.trunk = ConvNextModel._from_config(vision)
            self.text = CLIPTextModelWithProjection._from_config(text, attn_implementation=ATTENTION)
        else:
            with no_init_weights():
                self.trunk = ConvNextModel(vision)
                text._attn_implementation = ATTENTION
                self.text = CLIPTextModelWithProjection(text)
        self.head = VisualHead(
            kind=arch["head"],
            in_dim=vision.hidden_sizes[-1],
            embed_dim=arch["embed_dim"],
            dropout=arch["head_dropout"],
        )

    def load_original(self, visual: StateDict, text: StateDict, path: Path) -> None:
        """Load converted tensors (:func:`aeroseg.convert.convnext_clip.convert_state`); every tensor must be
        given with its shape, else a one-line CheckpointError naming the first missing / unexpected one."""
        given = {**visual, **{f"text.{k}": v for k, v in text.items()}}
        wanted = self.state_dict()
        missing = [k for k in wanted if k not in given]
        unexpected = [k for k in given if k not in wanted]
        wrong = [k for k in wanted if k in given and wanted[k].shape != given[k].shape]
        if missing or unexpected or wrong:
            parts = [
                f"{label} {names[0]!r} ({len(names)} in all)"
                for label, names in (
                    ("first missing", missing),
                    ("first unexpected", unexpected),
                    ("wrong shape", wrong),
                )
                if names
            ]
            raise CheckpointError(
                f"{path}: the CLIP ConvNeXt does not fit ({'; '.join(parts)}); expected {EXPECTED}"
            )
        self.load_state_dict({k: v.float() for k, v in given.items()}, strict=True)


def towers_from_state(state: StateDict, path: Path, template: dict[str, Any]) -> ConvNextClipTowers:
    """The CLIP ConvNeXt of an open_clip state dict (no prefix), architecture read from its shapes."""
    if not is_convnext_clip(state):
        raise CheckpointError(f"{path}: not a CLIP ConvNeXt checkpoint; expected {EXPECTED}")
    towers = ConvNextClipTowers(infer_architecture(state, path, template), initialise=False)
    towers.load_original(*convert_state(state, path), path)
    return towers.eval()


def load_towers(source: str, *, arch: str, pretrained: bool = True) -> ConvNextClipTowers:
    """The CLIP ConvNeXt of ``source`` (file, directory or hub id), or ``arch`` with random weights."""
    template = load_architecture(arch)
    if not pretrained:
        return ConvNextClipTowers(template)
    path = Path(hub_file(source, "CLIP ConvNeXt")).expanduser()
    if path.is_dir():
        files = [path / name for name in HUB_FILES if (path / name).is_file()]
        if not files:
            raise CheckpointError(
                f"{path}: holds none of {', '.join(HUB_FILES)} (an open_clip CLIP ConvNeXt)"
            )
        path = files[0]
    elif not path.is_file():
        path = _download(source)
    return towers_from_state(read_state_dict(path, EXPECTED), path, template)


def _download(source: str) -> Path:
    """open_clip's weights file of hub repository ``source``."""
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise CheckpointError(f"CLIP ConvNeXt checkpoint {source!r} does not exist; pass an existing file")
    from huggingface_hub import hf_hub_download

    error: Exception | None = None
    for name in HUB_FILES:
        try:
            return Path(hf_hub_download(source, name, local_files_only=hub_offline()))
        except Exception as err:  # noqa: BLE001 - the next name, then one line for the user
            error = err
    raise CheckpointError(
        f"cannot load CLIP ConvNeXt {source!r} from the Hugging Face hub ({type(error).__name__}); download its "
        f"{HUB_FILES[1]} where the hub is reachable and pass the file"
    )
