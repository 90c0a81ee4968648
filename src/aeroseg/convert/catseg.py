"""CAT-Seg and OVRS checkpoints -> :class:`aeroseg.AerOSeg` (presets ``cat-seg``, ``cat-seg-large``, ``ovrs``),
by renaming tensors at load time.

Accepted: what CAT-Seg's (KU-CVLAB/CAT-Seg) and OVRS's (caoql98/OVRS) detectron2 trainer writes, ``{"model":
state_dict, ...}`` (or the bare state dict), read with ``torch.load(weights_only=True)``: CAT-Seg's released
``model_base.pth`` (CLIP ViT-B/16) and ``model_large.pth`` (ViT-L/14@336), and OVRS's rotation +
attention-decoder model (``cat_seg_model_ours.py`` / ``model_ours.py``). Mapping, theirs -> ours
(``P`` = ``sem_seg_head.predictor.``, ``A`` = ``P`` + ``transformer.``, L = layer, n = 1, 2):

    P clip_model.*                               -> backbone.clip.* (OpenAI CLIP layout, see convert.clip;
        q_proj_weight/k_proj_weight/v_proj_weight + in_proj_bias, CAT-Seg's split attention, or in_proj_weight)
    upsample{n}                                  -> guidance_encoder.upsample{n}
    A conv1                                      -> correlation.conv
    A guidance_projection.0                      -> refinement.guidance_proj.0
    A text_guidance_projection.0                 -> refinement.text_proj.0
    A layers.L.swin_block.block_n.{norm1,norm2}  -> refinement.spatial.L.blocks.(n-1).{norm1,norm2}
    A layers.L.swin_block.block_n.attn.{q,k,v,proj} -> refinement.spatial.L.blocks.(n-1).attn.{q,k,v,proj}
    A layers.L.swin_block.block_n.mlp.fc{1,2}    -> refinement.spatial.L.blocks.(n-1).mlp.{0,2}
    A layers.L.swin_block.guidance_norm          -> refinement.spatial.L.norm_guidance
    A layers.L.attention.attention.{q,k,v}       -> refinement.classes.L.attn.{q,k,v}
    A layers.L.attention.{norm1,norm2}           -> refinement.classes.L.{norm1,norm2}
    A layers.L.attention.MLP.{0,2}               -> refinement.classes.L.mlp.{0,2}
    A layers.L.attention.padding_{tokens,guidance} (1×1×C) -> refinement.classes.L.padding_{tokens,guidance} (C)
    A decoder_guidance_projection.(n-1).0        -> decoder.stages.(n-1).guidance_proj.0
    A decoder{n}.up                              -> decoder.stages.(n-1).up
    A decoder{n}.conv.double_conv.{0,1,3,4}      -> decoder.stages.(n-1).fuse.{0,1,3,4}
    A decoder{n}.{cconv,sconv} (OVRS)            -> decoder.stages.(n-1).{channel_attention,spatial_attention}
    A head                                       -> decoder.head

The Swin shift mask buffer (``...block_2.attn_mask``) is dropped: it is recomputed. The architecture is read
from tensor shapes: rotations from the correlation convolution's inputs (1: CAT-Seg, 4: OVRS), the OVRS decoder
from ``cconv``, CLIP from its tensors. The rest follows CAT-Seg's code: with patch 16 (ViT-B/16) the CLIP input
is 384 and blocks 4 and 8 guide the decoder, otherwise (ViT-L/14@336) 336 and blocks 8 and 16.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aeroseg.config import AerOSegConfig
from aeroseg.convert._checkpoint import StateDict, apply_rules, count_indexed, read_state_dict
from aeroseg.convert.clip import load_original_clip_state
from aeroseg.errors import CheckpointError, UserError
from aeroseg.variants import preset_config

EXPECTED = (
    "a CAT-Seg or OVRS checkpoint (sem_seg_head.predictor.clip_model.*, sem_seg_head.predictor.transformer.*)"
)
CLIP_PREFIX = "sem_seg_head.predictor.clip_model."
AGGREGATOR_PREFIX = "sem_seg_head.predictor.transformer."
_A = re.escape(AGGREGATOR_PREFIX)
_P = r"(weight|bias)"
_DROPPED = re.compile(rf"{_A}layers\.\d+\.swin_block\.block_\d\.attn_mask")
_RULES: list[tuple[str, str]] = [
    (rf"upsample([12])\.{_P}", r"guidance_encoder.upsample\1.\2"),
    (rf"{_A}conv1\.{_P}", r"correlation.conv.\1"),
    (rf"{_A}guidance_projection\.0\.{_P}", r"refinement.guidance_proj.0.\1"),
    (rf"{_A}text_guidance_projection\.0\.{_P}", r"refinement.text_proj.0.\1"),
    (rf"{_A}layers\.(\d+)\.swin_block\.guidance_norm\.{_P}", r"refinement.spatial.\1.norm_guidance.\2"),
    (rf"{_A}layers\.(\d+)\.attention\.attention\.([qkv])\.{_P}", r"refinement.classes.\1.attn.\2.\3"),
    (rf"{_A}layers\.(\d+)\.attention\.(norm[12])\.{_P}", r"refinement.classes.\1.\2.\3"),
    (rf"{_A}layers\.(\d+)\.attention\.MLP\.([02])\.{_P}", r"refinement.classes.\1.mlp.\2.\3"),
    (rf"{_A}layers\.(\d+)\.attention\.(padding_tokens|padding_guidance)", r"refinement.classes.\1.\2"),
    (rf"{_A}decoder_guidance_projection\.([01])\.0\.{_P}", r"decoder.stages.\1.guidance_proj.0.\2"),
    (rf"{_A}head\.{_P}", r"decoder.head.\1"),
]
_BLOCK = re.compile(rf"{_A}layers\.(\d+)\.swin_block\.block_([12])\.(.+)")
_BLOCK_PARTS = {"mlp.fc1": "mlp.0", "mlp.fc2": "mlp.2"}
_DECODER = re.compile(rf"{_A}decoder([12])\.(.+)")
_DECODER_PARTS = {
    "up": "up",
    "conv.double_conv.0": "fuse.0",
    "conv.double_conv.1": "fuse.1",
    "conv.double_conv.3": "fuse.3",
    "conv.double_conv.4": "fuse.4",
    "cconv": "channel_attention",
    "sconv": "spatial_attention",
}
ROTATIONS = {1: (0,), 4: (0, 90, 180, 270)}


def is_catseg_checkpoint(state: StateDict) -> bool:
    """Whether ``state`` is in CAT-Seg's layout (its aggregator and its CLIP copy)."""
    return any(k.startswith(AGGREGATOR_PREFIX) for k in state) and any(
        k.startswith(CLIP_PREFIX) for k in state
    )


def _rename(key: str) -> str | None:
    """Our name of an aggregator / upsampler tensor, or None when no rule applies."""
    renamed = apply_rules(key, _RULES)
    if renamed is not None:
        return renamed
    block = _BLOCK.fullmatch(key)
    if block:
        layer, n, rest = block.groups()
        module, param = rest.rsplit(".", 1)
        module = _BLOCK_PARTS.get(module, module)
        if module in ("norm1", "norm2", "attn.q", "attn.k", "attn.v", "attn.proj", "mlp.0", "mlp.2"):
            return f"refinement.spatial.{layer}.blocks.{int(n) - 1}.{module}.{param}"
        return None
    decoder = _DECODER.fullmatch(key)
    if decoder:
        n, rest = decoder.groups()
        module, param = rest.rsplit(".", 1)
        if module in _DECODER_PARTS:
            return f"decoder.stages.{int(n) - 1}.{_DECODER_PARTS[module]}.{param}"
    return None


def _clip_state(state: StateDict) -> StateDict:
    """CAT-Seg's CLIP copy in OpenAI's layout: its split ``{q,k,v}_proj_weight`` joined into ``in_proj_weight``."""
    clip = {k[len(CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    for key in [k for k in clip if k.endswith(".attn.q_proj_weight")]:
        stem = key[: -len("q_proj_weight")]
        parts = [clip.pop(f"{stem}{name}_proj_weight", None) for name in "qkv"]
        if any(p is None for p in parts):
            raise CheckpointError(f"{stem}: q, k and v projection weights must all be present")
        clip[f"{stem}in_proj_weight"] = torch.cat(parts)  # type: ignore[arg-type]
    return clip


def _shape(state: StateDict, key: str, path: Path) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"{path}: missing tensor {key!r}; expected {EXPECTED}")
    return state[key].shape


def infer_config(
    state: StateDict, path: Path, patch_size: int, preset: str | None, **overrides: Any
) -> AerOSegConfig:
    """The AerOSeg config of a CAT-Seg / OVRS state dict: the preset's, with the widths read from the file."""
    a = AGGREGATOR_PREFIX
    conv1 = _shape(state, f"{a}conv1.weight", path)  # (d, R*P, 7, 7)
    rotations = ROTATIONS.get(conv1[1])
    if rotations is None:
        raise CheckpointError(f"{path}: {conv1[1]} correlation channels; CAT-Seg has 1, OVRS 4")
    attention = f"{a}decoder1.cconv.weight" in state
    if preset is None:
        preset = (
            "ovrs" if attention or len(rotations) > 1 else "cat-seg" if patch_size == 16 else "cat-seg-large"
        )
    vit_b = patch_size == 16  # CAT-Seg: "ViT-B/16" -> 384 and blocks [3, 7], anything else 336 and [7, 15]
    inferred: dict[str, Any] = dict(
        clip_image_size=384 if vit_b else 336,
        clip_arch="clip-vit-b-16" if vit_b else "clip-vit-l-14-336",
        guidance_layers=(4, 8) if vit_b else (8, 16),
        rotations=rotations,
        decoder_attention=attention,
        hidden_dim=conv1[0],
        correlation_kernel=conv1[-1],
        refinement_layers=count_indexed(state, f"{a}layers."),
        mlp_ratio=_shape(state, f"{a}layers.0.swin_block.block_1.mlp.fc1.weight", path)[0] / conv1[0],
        guidance_proj_dim=_shape(state, f"{a}guidance_projection.0.weight", path)[0],
        text_proj_dim=_shape(state, f"{a}text_guidance_projection.0.weight", path)[0],
        clip_guidance_dims=(
            _shape(state, "upsample1.weight", path)[1],
            _shape(state, "upsample2.weight", path)[1],
        ),
        decoder_guidance_dims=tuple(
            _shape(state, f"{a}decoder_guidance_projection.{i}.0.weight", path)[0] for i in (0, 1)
        ),
        decoder_dims=tuple(
            _shape(state, f"{a}decoder{n}.conv.double_conv.0.weight", path)[0] for n in (1, 2)
        ),
        class_pad_length=256 if f"{a}layers.0.attention.padding_tokens" in state else 0,
        clip=str(path),
    )
    try:
        config = preset_config(preset, **{**inferred, **overrides})
    except UserError as error:
        raise CheckpointError(f"{path}: {error}") from None
    if not isinstance(config, AerOSegConfig) or config.guidance_type != "clip":
        raise CheckpointError(
            f"{path}: a CAT-Seg / OVRS checkpoint loads into cat-seg, cat-seg-large or ovrs, not {preset!r}"
        )
    return config


def read_catseg(
    path: str | Path, *, preset: str | None = None, **overrides: Any
) -> tuple[AerOSegConfig, Any, StateDict, list[str]]:
    """The AerOSeg config, the CLIP model (weights loaded), the other tensors renamed to ours and the names of
    those no rule renames, of a CAT-Seg /
    OVRS checkpoint file; :func:`load_catseg_weights` puts the tensors into the model built from the config.

    ``preset`` (default: ``ovrs`` for a rotation / attention-decoder file, else ``cat-seg`` for CLIP ViT-B/16
    and ``cat-seg-large`` for ViT-L/14@336) and ``overrides`` (config fields) adjust what the file does not
    say. A file of another model raises a one-line :class:`CheckpointError` naming its first unexpected and
    first missing tensor.
    """
    path = Path(path)
    state = read_state_dict(path, EXPECTED)
    if not is_catseg_checkpoint(state):
        _mismatch(
            path, sorted(state), [CLIP_PREFIX + "visual.conv1.weight", AGGREGATOR_PREFIX + "conv1.weight"]
        )
    clip_activation = overrides.get("clip_activation", "auto")
    clip = load_original_clip_state(_clip_state(state), path, activation=clip_activation)
    config = infer_config(state, path, clip.config.vision_config.patch_size, preset, **overrides)
    converted, unexpected = {}, []
    for key, value in state.items():
        if key.startswith(CLIP_PREFIX) or _DROPPED.fullmatch(key):
            continue
        name = _rename(key)
        if name is None:
            unexpected.append(key)
        else:
            converted[name] = (
                value.reshape(-1) if name.endswith(("padding_tokens", "padding_guidance")) else value
            )
    return config, clip, converted, unexpected


def load_catseg_weights(
    model: nn.Module, converted: StateDict, unexpected: list[str], path: str | Path
) -> None:
    """Load the tensors of :func:`read_catseg` into ``model`` (its CLIP is loaded already), refusing in one
    line a file whose tensors are not exactly the model's (``unexpected``: its tensors no rule renames)."""
    path = Path(path)
    wanted = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.clip.")}
    missing = [k for k in wanted if k not in converted]
    unexpected = unexpected + [k for k in converted if k not in wanted]
    if unexpected or missing:
        _mismatch(path, unexpected, missing)
    wrong = next((k for k in wanted if wanted[k].shape != converted[k].shape), None)
    if wrong is not None:
        raise CheckpointError(
            f"{path}: tensor for {wrong} has shape {tuple(converted[wrong].shape)}, the "
            f"{model.config.preset} model needs {tuple(wanted[wrong].shape)}"
        )
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)


def _mismatch(path: Path, unexpected: list[str], missing: list[str]) -> None:
    """One-line CheckpointError naming the first unexpected and the first missing tensor."""
    parts = []
    if unexpected:
        parts.append(f"first unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all)")
    if missing:
        parts.append(f"first missing tensor {missing[0]!r} ({len(missing)} in all)")
    raise CheckpointError(f"{path}: not a CAT-Seg / OVRS checkpoint: {'; '.join(parts)}; expected {EXPECTED}")
