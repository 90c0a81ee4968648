"""Loading the pretrained backbones from a hub id, a local directory or an original checkpoint file.

A source is resolved in this order: an existing directory (``transformers`` format), an existing file (the
original OpenAI / open_clip, segment-anything or SAM2 checkpoint, converted by key mapping), otherwise a
Hugging Face hub id. ``pretrained=False`` builds the shipped architecture with random weights, offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, Sam2Model, Sam3Model, SamModel
from transformers.models.sam.configuration_sam import SamVisionConfig
from transformers.models.sam.modeling_sam import SamVisionEncoder
from transformers.models.sam2.configuration_sam2 import Sam2VisionConfig
from transformers.models.sam2.modeling_sam2 import Sam2VisionModel
from transformers.models.sam3.configuration_sam3 import Sam3VisionConfig
from transformers.models.sam3.modeling_sam3 import Sam3VisionModel

from aeroseg.convert.arch import load_arch_config
from aeroseg.convert.clip import load_original_clip
from aeroseg.convert.sam import load_original_sam
from aeroseg.convert.sam2 import load_original_sam2
from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.errors import CheckpointError
from aeroseg.hub import hub_file, hub_offline
from aeroseg.weight_files import (
    CONFIG_ERRORS,
    compare_shapes,
    config_reason,
    meta_build,
    safetensors_shapes,
)

_TOKENIZER_FILES = ("vocab.json", "merges.txt")
# what CLIPTokenizer.save_pretrained writes; an AerOSeg checkpoint carries them
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", *_TOKENIZER_FILES)
# CLIP and SAM attention through F.scaled_dot_product_attention (fused kernels), not "eager"
ATTENTION = "sdpa"


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
        if cls is CLIPTokenizer:
            return cls.from_pretrained(source, local_files_only=hub_offline())
        model, info = _quiet_load(cls, source, local_files_only=hub_offline())
    except (OSError, ValueError) as error:
        also = (
            " (the training-free model also runs without SAM: --guidance none)"
            if flag == "--guidance"
            else ""
        )
        raise CheckpointError(
            f"cannot load {what} {source!r} from the Hugging Face hub ({type(error).__name__}); download it "
            f"where the hub is reachable, or pass {flag} DIR (a transformers directory) or an original checkpoint "
            f"file{also}"
        ) from None
    _refuse_missing(info, source, what, flag)
    return model


def load_clip(
    source: str, *, arch: str, pretrained: bool = True, activation: str = "auto"
) -> tuple[CLIPModel, CLIPTokenizer]:
    """CLIP model and tokenizer from ``source`` (hub id, directory or original file), or random ``arch``.

    ``activation`` ("quick_gelu" / "gelu") sets the MLP activation; "auto" keeps what the source says (a
    ``transformers`` config, or :func:`aeroseg.convert.clip.detect_activation` for an original file). The
    tokenizer is the source's own (``tokenizer.json`` or ``vocab.json`` + ``merges.txt`` in a directory, or the
    hub repository's), else OpenAI's shipped one.
    """
    if not pretrained:
        config = load_arch_config(arch)
        if activation != "auto":
            config.text_config.hidden_act = config.vision_config.hidden_act = activation
        return _random(CLIPModel, config), clip_tokenizer()
    path = Path(hub_file(source, "CLIP")).expanduser()
    if path.is_dir():
        model, tokenizer = _load_dir(CLIPModel, path, "CLIP", "--clip"), directory_tokenizer(path)
    elif path.is_file():
        return load_original_clip(path, hidden_act=activation), clip_tokenizer()
    else:
        model = _from_hub(CLIPModel, source, "CLIP", "--clip")
        tokenizer = _from_hub(CLIPTokenizer, source, "CLIP tokenizer", "--clip")
    return set_activation(model, activation), tokenizer


def set_activation(clip: CLIPModel, activation: str) -> CLIPModel:
    """Use ``activation`` in every MLP of both towers (and say so in the config); "auto" changes nothing."""
    if activation == "auto":
        return clip
    from transformers.activations import ACT2FN

    for tower in (clip.config.text_config, clip.config.vision_config):
        tower.hidden_act = activation
    for module in clip.modules():
        if hasattr(module, "activation_fn") and hasattr(module, "fc1"):
            module.activation_fn = ACT2FN[activation]
    return clip


def directory_tokenizer(path: Path) -> CLIPTokenizer:
    """The tokenizer saved in a CLIP directory (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``), else
    OpenAI's shipped one."""
    if (path / "tokenizer.json").is_file() or all((path / f).is_file() for f in _TOKENIZER_FILES):
        try:
            return CLIPTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"{path}: its tokenizer files do not load ({error})".splitlines()[0]
            ) from None
    return clip_tokenizer()


def load_guidance_encoder(
    kind: str, source: str | None, *, arch: str | None, pretrained: bool = True
) -> nn.Module:
    """The image encoder of SAM (``SamVisionEncoder``), SAM2 (``Sam2VisionModel``) or SAM 3 (``Sam3VisionModel``;
    a hub id or transformers directory: facebook/sam3 is gated under the SAM License)."""
    if kind == "sam3":
        if source is None:
            pretrained = False
        return load_sam3(source or "", arch=arch or "sam3", pretrained=pretrained, flag="--guidance")[
            0
        ].vision_encoder
    full_model = {"sam": SamModel, "sam2": Sam2Model}[kind]
    if not pretrained or source is None:
        if arch is None:
            raise CheckpointError(
                f"no {kind} guidance source or architecture given; set guidance or guidance_arch"
            )
        model = _random(full_model, load_arch_config(arch))
    else:
        path = Path(hub_file(source, kind.upper())).expanduser()
        if path.is_dir():
            model = _load_dir(full_model, path, kind.upper(), "--guidance")
        elif path.is_file():
            model = load_original_sam(path) if kind == "sam" else load_original_sam2(path)
        else:
            model = _from_hub(full_model, source, kind.upper(), "--guidance")
    # Sam2VisionModel.from_pretrained on a full Sam2Model checkpoint leaves the backbone random: always load the
    # full model and take its image encoder.
    return model.vision_encoder


def load_sam3(
    source: str, *, arch: str, pretrained: bool = True, flag: str = "--sam3"
) -> tuple[Sam3Model, CLIPTokenizer]:
    """SAM 3 (eval mode) and its tokenizer from a hub id or a transformers directory, or the random
    architecture ``arch``. facebook/sam3 is gated on the hub under the SAM License."""
    if not pretrained:
        return _random(Sam3Model, load_arch_config(arch)).eval(), clip_tokenizer()
    path = Path(source).expanduser()
    if path.is_file():
        raise CheckpointError(
            f"{flag} {path}: SAM 3 loads from a transformers directory or hub id (facebook/sam3), not a file"
        )
    if path.is_dir():
        try:
            model = _load_dir(Sam3Model, path, "SAM3", flag)
        except CheckpointError as error:
            if "is expected here" in str(error) or "are missing" in str(error):
                raise
            raise CheckpointError(
                f"{path} is not a transformers SAM 3 directory; pass one, or a hub id"
            ) from None
    elif source.startswith((".", "/", "~")):
        raise CheckpointError(
            f"SAM 3 directory {source!r} does not exist; pass an existing transformers directory"
        )
    else:
        try:
            model, info = _quiet_load(Sam3Model, source, local_files_only=hub_offline())
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"cannot load SAM 3 {source!r} from the Hugging Face hub ({type(error).__name__}): it is gated under "
                "the SAM License; accept it on huggingface.co/facebook/sam3, log in with `hf auth login` where the "
                "hub is reachable, or pass a local transformers directory"
            ) from None
        _refuse_missing(info, source, "SAM3", flag)
    has_tokenizer = path.is_dir() and all((path / f).exists() for f in _TOKENIZER_FILES)
    return model.eval(), CLIPTokenizer.from_pretrained(path) if has_tokenizer else clip_tokenizer()


def _random(cls: Any, config: Any) -> Any:
    """A ``transformers`` model of ``config`` with random weights and the fused attention."""
    return cls._from_config(config, attn_implementation=ATTENTION)


def _load_dir(cls: Any, path: Path, what: str, flag: str) -> Any:
    """``cls`` from a transformers directory that must hold a model of kind ``what`` with every weight."""
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    expected = _MODEL_TYPES[what]
    if model_type is not None and model_type not in expected:
        holds = _KIND_NAMES.get(model_type, f"model_type {model_type!r}")
        raise CheckpointError(
            f"{flag} {path} holds a {holds} model, but a {what} model is expected here (model_type "
            f"{' or '.join(map(repr, expected))})"
        )
    _check_dir_weights(cls, path)
    try:
        model, info = _quiet_load(cls, path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a transformers {what} directory ({error})".splitlines()[0]
        ) from None
    _refuse_missing(info, path, what, flag)
    return model


def _check_dir_weights(cls: Any, path: Path) -> None:
    """Refuse in one line, before ``cls`` is allocated, a directory whose ``.safetensors`` files are truncated
    or hold tensors of other shapes than its ``config.json`` describes (the model is built on the meta device
    to compare)."""
    files = sorted(path.glob("*.safetensors"))
    if not files or not (path / "config.json").is_file():
        return  # transformers names what is missing
    found: dict[str, tuple[int, ...]] = {}
    for file in files:
        found.update(safetensors_shapes(file))
    config_file = path / "config.json"
    try:
        config = cls.config_class.from_pretrained(path, local_files_only=True)
    except (OSError, *CONFIG_ERRORS) as error:
        raise CheckpointError(f"{config_file}: {config_reason(error)}") from None
    skeleton = meta_build(lambda: _random(cls, config), config_file)
    wanted = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    compare_shapes(wanted, found, files[0] if len(files) == 1 else path, config_file)


_MODEL_TYPES = {
    "CLIP": ("clip",),
    "SAM": ("sam",),
    "SAM2": ("sam2", "sam2_video"),
    "SAM3": ("sam3", "sam3_video"),
}
_KIND_NAMES = {
    "clip": "CLIP",
    "sam": "SAM",
    "sam2": "SAM2",
    "sam2_video": "SAM2",
    "sam3": "SAM3",
    "sam3_video": "SAM3",
    "siglip": "SigLIP",
}


def _quiet_load(cls: Any, source: Any, **options: Any) -> tuple[Any, dict[str, list[str]]]:
    """``cls.from_pretrained`` with its loading information, without transformers' report of missing
    weights (they are an error here, raised by :func:`_refuse_missing`)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(source, attn_implementation=ATTENTION, output_loading_info=True, **options)
    finally:
        hf_logging.set_verbosity(verbosity)


def _refuse_missing(info: dict[str, Any], source: Any, what: str, flag: str) -> None:
    """Missing weights would stay random: an error naming the source and the first missing tensor."""
    used = (
        ("vision_encoder.",) if what in ("SAM", "SAM2", "SAM3") else ("",)
    )  # the guidance uses the image encoder
    missing = [k for k in info.get("missing_keys", ()) if k.startswith(used)]
    if missing:
        raise CheckpointError(
            f"{flag} {source}: {len(missing)} weights of the {what} model are missing (e.g. {sorted(missing)[0]}); "
            f"it is not a complete {what} checkpoint"
        )


def backbone_configs(clip: CLIPModel, guidance: nn.Module | None) -> dict[str, Any]:
    """The architectures to store in an AerOSeg checkpoint, so that it reloads with no other file."""
    return {
        "clip_config": clip.config.to_dict(),
        "guidance_config": None if guidance is None else guidance.config.to_dict(),
    }


def backbones_from_configs(kind: str, configs: dict[str, Any]) -> tuple[CLIPModel, nn.Module | None]:
    """Random-weight backbones with the stored architectures (weights are loaded afterwards)."""
    clip = _random(CLIPModel, CLIPConfig.from_dict(configs["clip_config"]))
    guidance = None
    if kind == "sam":
        guidance = _random(SamVisionEncoder, SamVisionConfig.from_dict(configs["guidance_config"]))
    elif kind == "sam2":
        guidance = _random(Sam2VisionModel, Sam2VisionConfig.from_dict(configs["guidance_config"]))
    elif kind == "sam3":
        guidance = _random(Sam3VisionModel, Sam3VisionConfig.from_dict(configs["guidance_config"]))
    return clip, guidance
