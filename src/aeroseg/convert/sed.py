"""SED checkpoints (xb534/SED) -> :class:`aeroseg.sed.SED` (presets ``sed``, ``sed-large``), by renaming
tensors at load time.

Accepted: what SED's detectron2 trainer writes, ``{"model": state_dict, ...}`` (or the bare state dict), read
with ``torch.load(weights_only=True)``: the released ConvNeXt-B and ConvNeXt-L models. Mapping, theirs ->
ours (``P`` = ``sem_seg_head.predictor.``, ``A`` = ``P`` + ``transformer.``, n = 1, 2, 3):

    P clip_model.*                    -> encoder.{trunk,head}.*, text_encoder.clip.* (open_clip layout, see
                                         aeroseg.convert.convnext_clip)
    A conv1                           -> cost_map.embed
    A decoder_guidance_projection.i.0 -> decoder.skip_proj.i.0
    A decoder_corr_guidance_projection.i.0 -> decoder.cost_proj.i.0
    A decoder{n}.cnext.*              -> decoder.stages.(n-1).aggregation.spatial.*
    A decoder{n}.attention.attention.{q,k,v} -> decoder.stages.(n-1).aggregation.classes.{q,k,v}
    A decoder{n}.attention.{norm1,norm2} -> decoder.stages.(n-1).aggregation.classes.{norm1,norm2}
    A decoder{n}.attention.MLP.{0,2}  -> decoder.stages.(n-1).aggregation.classes.mlp.{0,2}
    A decoder{n}.up                   -> decoder.stages.(n-1).fusion.up
    A decoder{n}.conv.double_conv.{0,1,3,4} -> decoder.stages.(n-1).fusion.fuse.{0,1,3,4}
    A head{0,1,2}                     -> decoder.rejection.heads.{0,1,2}
    A head                            -> decoder.head

The architecture is read from the shapes: the CLIP ConvNeXt (depths, widths, head, text tower), the cost map
and decoder widths, kernels and skip widths. The preset (``sed`` for a ConvNeXt-B trunk, ``sed-large`` for
ConvNeXt-L, else ``preset``) gives the rest: heads, pooling, templates, early rejection, CLIP input size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aeroseg.convert._checkpoint import StateDict, apply_rules, read_state_dict
from aeroseg.convert.convnext_clip import is_convnext_clip
from aeroseg.errors import CheckpointError, UserError
from aeroseg.sed.config import PRESETS, SEDConfig
from aeroseg.sed.convnext_clip import load_architecture, towers_from_state
from aeroseg.sed.model import SED

EXPECTED = "a SED checkpoint (sem_seg_head.predictor.clip_model.visual.trunk.*, sem_seg_head.predictor.transformer.*)"
CLIP_PREFIX = "sem_seg_head.predictor.clip_model."
AGGREGATOR_PREFIX = "sem_seg_head.predictor.transformer."
_A = re.escape(AGGREGATOR_PREFIX)
_P = r"(weight|bias)"
_RULES: list[tuple[str, str]] = [
    (rf"{_A}conv1\.{_P}", r"cost_map.embed.\1"),
    (rf"{_A}decoder_guidance_projection\.([012])\.0\.{_P}", r"decoder.skip_proj.\1.0.\2"),
    (rf"{_A}decoder_corr_guidance_projection\.([012])\.0\.{_P}", r"decoder.cost_proj.\1.0.\2"),
    (rf"{_A}head([012])\.{_P}", r"decoder.rejection.heads.\1.\2"),
    (rf"{_A}head\.{_P}", r"decoder.head.\1"),
]
_STAGE = re.compile(rf"{_A}decoder([123])\.(.+)")
_STAGE_PARTS = [  # (official module inside decoder{n}, ours inside decoder.stages.(n-1))
    (re.compile(r"cnext\.(dwconv|norm|pwconv1|pwconv2)\.(weight|bias)"), r"aggregation.spatial.\1.\2"),
    (re.compile(r"cnext\.gamma"), r"aggregation.spatial.gamma"),
    (re.compile(r"attention\.attention\.([qkv])\.(weight|bias)"), r"aggregation.classes.\1.\2"),
    (re.compile(r"attention\.(norm[12])\.(weight|bias)"), r"aggregation.classes.\1.\2"),
    (re.compile(r"attention\.MLP\.([02])\.(weight|bias)"), r"aggregation.classes.mlp.\1.\2"),
    (re.compile(r"up\.(weight|bias)"), r"fusion.up.\1"),
    (re.compile(r"conv\.double_conv\.([0134])\.(weight|bias)"), r"fusion.fuse.\1.\2"),
]
TRUNK_PRESETS = {128: "sed", 192: "sed-large"}  # stem width of ConvNeXt-B / ConvNeXt-L -> preset


def recognise(state: StateDict) -> bool:
    """Whether ``state`` is in SED's layout: its aggregator (with the cost map embedding and the rejection
    heads) beside an open_clip ConvNeXt CLIP."""
    return (
        f"{AGGREGATOR_PREFIX}conv1.weight" in state
        and f"{AGGREGATOR_PREFIX}head0.weight" in state
        and is_convnext_clip(state, CLIP_PREFIX)
    )


def _rename(key: str) -> str | None:
    renamed = apply_rules(key, _RULES)
    if renamed is not None:
        return renamed
    stage = _STAGE.fullmatch(key)
    if stage:
        n, rest = stage.groups()
        for pattern, replacement in _STAGE_PARTS:
            match = pattern.fullmatch(rest)
            if match:
                return f"decoder.stages.{int(n) - 1}.{match.expand(replacement)}"
    return None


def _looks_like(state: StateDict) -> str:
    """What a state dict that is not SED's seems to be, for the refusal."""
    if any(k.startswith("sem_seg_head.predictor.clip_model.visual.conv1") for k in state):
        return "a CAT-Seg / OVRS checkpoint (OpenAI ViT CLIP)"
    if any(k.startswith("visual.trunk.") for k in state):
        return "an open_clip ConvNeXt CLIP alone (no SED decoder)"
    if "visual.conv1.weight" in state:
        return "a ViT CLIP checkpoint alone"
    if any(k.startswith("image_encoder.") for k in state):
        return "a SAM checkpoint"
    return f"another model's (first tensor {next(iter(state))!r})"


def infer_config(state: StateDict, path: Path, preset: str | None, **overrides: Any) -> SEDConfig:
    """The SED config of a SED state dict: the preset's, with the widths read from the file."""
    a = AGGREGATOR_PREFIX
    stem = state[f"{CLIP_PREFIX}visual.trunk.stem.0.weight"].shape[0]
    preset = preset or TRUNK_PRESETS.get(stem, "sed")
    if preset not in PRESETS:
        raise CheckpointError(f"{path}: a SED checkpoint loads into {' or '.join(PRESETS)}, not {preset!r}")

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"{path}: missing tensor {key!r}; expected {EXPECTED}")
        return tuple(state[key].shape)

    conv1 = shape(f"{a}conv1.weight")  # (C, P, 7, 7)
    inferred = dict(
        hidden_dim=conv1[0],
        decoder_dims=tuple(shape(f"{a}decoder{n}.conv.double_conv.0.weight")[0] for n in (1, 2, 3)),
        decoder_guidance_dims=tuple(
            shape(f"{a}decoder_guidance_projection.{i}.0.weight")[1] for i in range(3)
        ),
        decoder_guidance_proj_dims=tuple(
            shape(f"{a}decoder_guidance_projection.{i}.0.weight")[0] for i in range(3)
        ),
        decoder_cost_dims=tuple(
            shape(f"{a}decoder_corr_guidance_projection.{i}.0.weight")[0] for i in range(3)
        ),
        kernel_sizes=tuple(shape(f"{a}decoder{n}.cnext.dwconv.weight")[-1] for n in (1, 2, 3)),
        clip=str(path),
    )
    try:
        config = PRESETS[preset](**{**inferred, **overrides})
    except (UserError, ValueError) as error:
        raise CheckpointError(f"{path}: {str(error).splitlines()[0]}") from None
    if len(config.prompt_templates) != conv1[1]:
        raise CheckpointError(
            f"{path}: its cost map has {conv1[1]} template channels, the config {len(config.prompt_templates)} "
            "prompt templates"
        )
    return config


def load_sed(file: str | Path, preset: str | None = None, **overrides: Any) -> SED:
    """Build the SED model of a SED checkpoint file and load its weights (float32, eval mode).

    ``preset`` (default: ``sed`` for a ConvNeXt-B trunk, ``sed-large`` for ConvNeXt-L) and ``overrides``
    (SEDConfig fields, e.g. ``early_rejection=True``) set what the file does not say. A file of another model
    raises a one-line :class:`CheckpointError` saying what it looks like, or naming its first unexpected and
    first missing tensor.
    """
    from aeroseg.convert.tokenizer import clip_tokenizer

    path = Path(file)
    state = read_state_dict(path, EXPECTED)
    if not recognise(state):
        raise CheckpointError(
            f"{path}: not a SED checkpoint: it looks like {_looks_like(state)}; expected {EXPECTED}"
        )
    config = infer_config(state, path, preset, **overrides)
    clip = {k[len(CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    towers = towers_from_state(clip, path, load_architecture(config.clip_arch))
    model = SED.assemble(config, towers, clip_tokenizer())
    converted, unexpected = {}, []
    for key, value in state.items():
        if key.startswith(CLIP_PREFIX):
            continue
        name = _rename(key)
        if name is None:
            unexpected.append(key)
        else:
            converted[name] = value
    wanted = {k: v for k, v in model.state_dict().items() if not k.startswith(("encoder.", "text_encoder."))}
    missing = [k for k in wanted if k not in converted]
    unexpected += [k for k in converted if k not in wanted]
    if unexpected or missing:
        parts = [
            f"{label} {names[0]!r} ({len(names)} in all)"
            for label, names in (("first unexpected tensor", unexpected), ("first missing tensor", missing))
            if names
        ]
        raise CheckpointError(f"{path}: does not fit the {config.preset} model: {'; '.join(parts)}")
    wrong = next((k for k in wanted if wanted[k].shape != converted[k].shape), None)
    if wrong is not None:
        raise CheckpointError(
            f"{path}: tensor for {wrong} has shape {tuple(converted[wrong].shape)}, the {config.preset} model "
            f"needs {tuple(wanted[wrong].shape)}"
        )
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)
    return model.eval()
