"""Loading the pretrained backbones from a hub id, a local directory or an original checkpoint file.

A source is resolved in this order: an existing directory (``transformers`` format), an existing file (the
original OpenAI / open_clip, segment-anything or SAM2 checkpoint, converted by key mapping), otherwise a
Hugging Face hub id. ``pretrained=False`` builds the shipped architecture with random weights, offline.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, Sam2Model, Sam3Model, SamModel
from transformers.models.sam.configuration_sam import SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionEncoder
from transformers.models.sam2.configuration_sam2 import Sam2VisionConfig
from transformers.models.sam2.modeling_sam2 import Sam2VisionModel
from transformers.models.sam3.configuration_sam3 import Sam3VisionConfig
from transformers.models.sam3.modeling_sam3 import Sam3VisionModel

from aeroseg.convert.arch import load_arch_config
from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.errors import CheckpointError

_TOKENIZER_FILES = ("vocab.json", "merges.txt")
# CLIP and SAM attention through F.scaled_dot_product_attention (fused kernels), not "eager"
ATTENTION = "sdpa"


def hub_offline() -> bool:
    """Use only the local cache when ``HF_HUB_OFFLINE`` is set or the hub's host does not resolve: cached
    weights still load, and missing ones fail at once with one line instead of retrying for half a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return True
    return not _hub_resolves()


@functools.cache
def _hub_resolves() -> bool:
    from huggingface_hub import constants

    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return False
    return True


def _from_hub(cls: Any, source: str, what: str, flag: str) -> Any:
    """``cls.from_pretrained(source)`` with a one-line error when the hub or the id cannot be reached."""
    looks_local = source.startswith((".", "/", "~")) or source.endswith(
        (".pt", ".pth", ".bin", ".safetensors")
    )
    if looks_local:
        raise CheckpointError(
            f"{what} checkpoint {source!r} does not exist; pass an existing file or directory"
        )
    try:
        options = {} if cls is CLIPTokenizer else {"attn_implementation": ATTENTION}
        return cls.from_pretrained(source, local_files_only=hub_offline(), **options)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"cannot load {what} {source!r} from the Hugging Face hub ({type(error).__name__}); download it "
            f"where the hub is reachable, or pass {flag} DIR (a transformers directory) or an original checkpoint file"
        ) from None


def _hub_file(source: str, what: str) -> str:
    """``hf://owner/repo/path/in/repo.pt`` → a local copy of that one file (original checkpoints on the hub)."""
    if not source.startswith("hf://"):
        return source
    parts = source[len("hf://") :].split("/")
    if len(parts) < 3:
        raise CheckpointError(f"{what} source {source!r} must look like hf://OWNER/REPO/PATH/FILE")
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download("/".join(parts[:2]), "/".join(parts[2:]), local_files_only=hub_offline())
    except Exception as error:  # noqa: BLE001 - any hub failure becomes one line for the user
        raise CheckpointError(
            f"cannot download {source!r} ({type(error).__name__}); download the file where the hub is reachable "
            "and pass its local path"
        ) from None


def load_clip(source: str, *, arch: str, pretrained: bool = True) -> tuple[CLIPModel, CLIPTokenizer]:
    """CLIP model and tokenizer from ``source`` (hub id, directory or original file), or random ``arch``."""
    if not pretrained:
        return _random(CLIPModel, load_arch_config(arch)), clip_tokenizer()
    path = Path(_hub_file(source, "CLIP")).expanduser()
    if path.is_dir():
        model = _load_dir(CLIPModel, path, "CLIP")
        has_tokenizer = all((path / f).exists() for f in _TOKENIZER_FILES)
        return model, CLIPTokenizer.from_pretrained(path) if has_tokenizer else clip_tokenizer()
    if path.is_file():
        from aeroseg.convert.clip import load_original_clip

        return load_original_clip(path), clip_tokenizer()
    model = _from_hub(CLIPModel, source, "CLIP", "--clip")
    return model, _from_hub(CLIPTokenizer, source, "CLIP tokenizer", "--clip")


def load_guidance_encoder(
    kind: str, source: str | None, *, arch: str | None, pretrained: bool = True
) -> nn.Module:
    """The image encoder of SAM (``SamVisionEncoder``), SAM2 (``Sam2VisionModel``) or SAM 3 (``Sam3VisionModel``;
    a hub id or transformers directory: facebook/sam3 is gated under the SAM License)."""
    full_model = {"sam": SamModel, "sam2": Sam2Model, "sam3": Sam3Model}[kind]
    if not pretrained or source is None:
        if arch is None:
            raise CheckpointError(
                f"no {kind} guidance source or architecture given; set guidance or guidance_arch"
            )
        model = _random(full_model, load_arch_config(arch))
    else:
        path = Path(_hub_file(source, kind.upper())).expanduser()
        if path.is_dir():
            model = _load_dir(full_model, path, kind.upper())
        elif path.is_file() and kind == "sam3":
            raise CheckpointError(
                f"{path}: SAM 3 loads from a transformers directory or hub id (facebook/sam3), not a file"
            )
        elif path.is_file():
            from aeroseg.convert.sam import load_original_sam
            from aeroseg.convert.sam2 import load_original_sam2

            model = load_original_sam(path) if kind == "sam" else load_original_sam2(path)
        else:
            model = _from_hub(full_model, source, kind.upper(), "--guidance")
    # Sam2VisionModel.from_pretrained on a full Sam2Model checkpoint leaves the backbone random: always load the
    # full model and take its image encoder.
    return model.vision_encoder


def _random(cls: Any, config: Any) -> Any:
    """A ``transformers`` model of ``config`` with random weights and the fused attention."""
    return cls._from_config(config, attn_implementation=ATTENTION)


def _load_dir(cls: Any, path: Path, what: str) -> Any:
    try:
        return cls.from_pretrained(path, local_files_only=True, attn_implementation=ATTENTION)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a transformers {what} directory ({error})".splitlines()[0]
        ) from None


def backbone_configs(clip: CLIPModel, guidance: nn.Module | None) -> dict[str, Any]:
    """The architectures to store in an AerOSeg checkpoint, so that it reloads with no other file."""
    return {
        "clip_config": clip.config.to_dict(),
        "guidance_config": None if guidance is None else guidance.config.to_dict(),
    }


def backbones_from_configs(
    kind: str, configs: dict[str, Any]
) -> tuple[CLIPModel, CLIPTokenizer, nn.Module | None]:
    """Random-weight backbones with the stored architectures (weights are loaded afterwards)."""
    clip = _random(CLIPModel, CLIPConfig.from_dict(configs["clip_config"]))
    guidance = None
    if kind == "sam":
        guidance = _random(SamVisionEncoder, SamVisionConfig.from_dict(configs["guidance_config"]))
    elif kind == "sam2":
        guidance = _random(Sam2VisionModel, Sam2VisionConfig.from_dict(configs["guidance_config"]))
    elif kind == "sam3":
        guidance = _random(Sam3VisionModel, Sam3VisionConfig.from_dict(configs["guidance_config"]))
    return clip, clip_tokenizer(), guidance
