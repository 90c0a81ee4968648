"""SCAN checkpoints -> :class:`aeroseg.scan.SCAN` (presets ``scan``, ``scan-large``), by renaming tensors at
load time.

Accepted: what SCAN's (``yongliu20/SCAN``) detectron2 trainer writes, ``{"model": state_dict, ...}`` (or the
bare state dict), read with ``torch.load(weights_only=True)``: the released ``SCAN.pth`` (Swin-B, CLIP
ViT-L/14, its finetuned CLIP put in by ``tools/replace_clip.py``) and a trained ``scan_vitB.yaml`` model.
Mapping, theirs -> ours (``P`` = ``sem_seg_head.pixel_decoder.``, ``D`` = ``sem_seg_head.predictor.``, ``T`` =
``decoder.transformer.``, ``L`` = ``T decoder.layers.i``)::

    backbone.*                                  -> backbone.* (Microsoft's Swin layout, see convert.swin)
    P input_proj.i.{0,1}                        -> pixel_decoder.input_projections.i.{0,1}
    P transformer.level_embed                   -> pixel_decoder.level_embed
    P transformer.encoder.layers.i.self_attn.*  -> pixel_decoder.encoder.layers.i.self_attn.*
    P ... norm1 / linear1 / linear2 / norm2     -> ... self_attn_layer_norm / fc1 / fc2 / final_layer_norm
    P mask_features                             -> pixel_decoder.mask_projection
    P adapter_1 / layer_1 (.weight, .norm.*)    -> pixel_decoder.adapter_1 / layer_1 (.0.weight, .1.*)
    D query_feat / query_embed / level_embed    -> T queries_features / queries_embedder / level_embed
    D input_proj.i                              -> T input_projections.i
    D transformer_self_attention_layers.i.self_attn.in_proj_* -> L.self_attn.{q,k,v}_proj (split in three)
    D transformer_self_attention_layers.i.{self_attn.out_proj,norm} -> L.{self_attn.out_proj,self_attn_layer_norm}
    D transformer_cross_attention_layers.i.{multihead_attn,norm}    -> L.{cross_attn,cross_attn_layer_norm}
    D transformer_ffn_layers.i.{linear1,linear2,norm}               -> L.{fc1,fc2,final_layer_norm}
    D decoder_norm / mask_embed.layers.k        -> T decoder.layernorm / T decoder.mask_predictor.mask_embedder.k.0
    D class_embed.layers.k                      -> decoder.class_embed.k.0
    clip_adapter.clip_model.*                   -> region_clip (image tower) and classifier (text tower), in
                                                   open_clip's layout (see convert.clip)
    clip_adapter.original_clip.*                -> global_clip (open_clip's image tower layout)
    clip_adapter.non_object_embedding           -> classifier.non_object_embedding
    LFM.conv{1,2} / oriclip_mlp.fc{1,2}         -> integration.frequency.conv{1,2} / integration.clip_projection.fc{1,2}
    fusion_decoder.{multiattn,ln}.i             -> integration.fusion.{attention,norms}.i
    lightweight_transformer.* / learnable_weight -> integration.transformer.* / integration.learnable_weight

Dropped: the buffers ``clip_adapter.pixel_mean`` / ``pixel_std``, ``criterion.empty_weight``, the Swin's
``relative_position_index``; ``clip_adapter.clip_model.visual.mask_embedding``, which ``replace_clip.py`` may
add and SCAN never reads. CLIP's ``logit_scale`` is read and not kept (SCAN's temperature is a constant
100).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from aeroseg.convert._checkpoint import StateDict, apply_rules, count_indexed, read_state_dict
from aeroseg.convert.catseg import is_catseg_checkpoint
from aeroseg.convert.clip import load_original_clip_state
from aeroseg.convert.swin import convert_swin
from aeroseg.errors import CheckpointError, UserError

EXPECTED = "a SCAN checkpoint (yongliu20/SCAN: backbone.*, sem_seg_head.*, clip_adapter.*, fusion_decoder.*)"
CLIP, ORIGINAL = "clip_adapter.clip_model.", "clip_adapter.original_clip."
PIXEL, PRED = "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor."
_DROPPED = re.compile(
    r"clip_adapter\.(pixel_mean|pixel_std|clip_model\.visual\.mask_embedding)"
    r"|criterion\.empty_weight"
)
_T = "decoder.transformer."
_E, _EO = rf"{PIXEL}transformer\.encoder\.layers\.(\d+)\.", r"pixel_decoder.encoder.layers.\1."
_S, _C = (
    rf"{PRED}transformer_self_attention_layers\.(\d+)\.",
    rf"{PRED}transformer_cross_attention_layers\.(\d+)\.",
)
_F, _L = rf"{PRED}transformer_ffn_layers\.(\d+)\.", rf"{_T}decoder.layers.\1."
_WB = r"\.(weight|bias)"
_RULES = [
    (rf"{PIXEL}input_proj\.(\d)\.([01]){_WB}", r"pixel_decoder.input_projections.\1.\2.\3"),
    (rf"{PIXEL}transformer\.level_embed", "pixel_decoder.level_embed"),
    (rf"{_E}self_attn\.(\w+){_WB}", rf"{_EO}self_attn.\2.\3"),
    (rf"{_E}norm1{_WB}", rf"{_EO}self_attn_layer_norm.\2"),
    (rf"{_E}linear([12]){_WB}", rf"{_EO}fc\2.\3"),
    (rf"{_E}norm2{_WB}", rf"{_EO}final_layer_norm.\2"),
    (rf"{PIXEL}mask_features{_WB}", r"pixel_decoder.mask_projection.\1"),
    (rf"{PIXEL}(adapter|layer)_(\d+)\.weight", r"pixel_decoder.\1_\2.0.weight"),
    (rf"{PIXEL}(adapter|layer)_(\d+)\.norm{_WB}", r"pixel_decoder.\1_\2.1.\3"),
    (rf"{PRED}query_feat\.weight", f"{_T}queries_features.weight"),
    (rf"{PRED}query_embed\.weight", f"{_T}queries_embedder.weight"),
    (rf"{PRED}level_embed\.weight", f"{_T}level_embed.weight"),
    (rf"{PRED}input_proj\.(\d){_WB}", rf"{_T}input_projections.\1.\2"),
    (rf"{_S}self_attn\.out_proj{_WB}", rf"{_L}self_attn.out_proj.\2"),
    (rf"{_S}norm{_WB}", rf"{_L}self_attn_layer_norm.\2"),
    (rf"{_C}multihead_attn\.(.+)", rf"{_L}cross_attn.\2"),
    (rf"{_C}norm{_WB}", rf"{_L}cross_attn_layer_norm.\2"),
    (rf"{_F}linear([12]){_WB}", rf"{_L}fc\2.\3"),
    (rf"{_F}norm{_WB}", rf"{_L}final_layer_norm.\2"),
    (rf"{PRED}decoder_norm{_WB}", rf"{_T}decoder.layernorm.\1"),
    (rf"{PRED}mask_embed\.layers\.(\d){_WB}", rf"{_T}decoder.mask_predictor.mask_embedder.\1.0.\2"),
    (rf"{PRED}class_embed\.layers\.(\d){_WB}", r"decoder.class_embed.\1.0.\2"),
    (r"clip_adapter\.non_object_embedding", "classifier.non_object_embedding"),
    (rf"LFM\.(conv[12]){_WB}", r"integration.frequency.\1.\2"),
    (rf"oriclip_mlp\.(fc[12]){_WB}", r"integration.clip_projection.\1.\2"),
    (r"fusion_decoder\.multiattn\.(\d+)\.(.+)", r"integration.fusion.attention.\1.\2"),
    (rf"fusion_decoder\.ln\.(\d+){_WB}", r"integration.fusion.norms.\1.\2"),
    (r"lightweight_transformer\.(.+)", r"integration.transformer.\1"),
    (r"learnable_weight", "integration.learnable_weight"),
]
_SELF_QKV = re.compile(rf"{_S}self_attn\.in_proj_(weight|bias)")
_OTHERS = {  # a tensor that only another model's checkpoint has -> what it is
    "side_adapter_network.": "a SAN checkpoint (load it with preset san)",
    "visual.conv1.weight": "a CLIP checkpoint",
    f"{PRED}class_embed.weight": "a closed-vocabulary Mask2Former checkpoint",
}


def recognise(state: StateDict) -> bool:
    """Whether ``state`` is in SCAN's layout (its Swin, decoder, two CLIP towers and fusion)."""
    return all(
        any(k.startswith(p) for k in state) for p in ("backbone.", PRED, CLIP, ORIGINAL, "fusion_decoder.")
    )


def convert(state: StateDict) -> tuple[StateDict, list[str]]:
    """Our names for every tensor of ``state`` but the CLIP towers, and the keys no rule converts."""
    out: StateDict = {}
    unknown = []
    swin, unknown_swin = convert_swin(
        {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    )
    out.update({f"backbone.{k}": v for k, v in swin.items()})
    unknown += [f"backbone.{k}" for k in unknown_swin]
    for key, value in state.items():
        if key.startswith(("backbone.", CLIP, ORIGINAL)) or _DROPPED.fullmatch(key):
            continue
        renamed, qkv = apply_rules(key, _RULES), _SELF_QKV.fullmatch(key)
        if renamed is not None:
            out[renamed] = value
        elif qkv:
            layer, kind = qkv.groups()
            for name, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{_T}decoder.layers.{layer}.self_attn.{name}_proj.{kind}"] = chunk.contiguous()
        else:
            unknown.append(key)
    return out, unknown


def _shape(state: StateDict, key: str, path: Path) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"{path}: missing tensor {key!r}; expected {EXPECTED}")
    return state[key].shape


def infer_config(state: StateDict, path: Path, clip_layers: int, preset: str | None, **overrides: Any) -> Any:
    """The SCAN config of a state dict: the preset's (default by the CLIP depth: 24 layers -> scan-large), with
    the sizes read from the file."""
    from aeroseg.scan.config import PRESETS

    swin_depths = tuple(count_indexed(state, f"backbone.layers.{i}.blocks.") for i in range(4))
    table = _shape(state, "backbone.layers.0.blocks.0.attn.relative_position_bias_table", path)
    class_layers = count_indexed(state, f"{PRED}class_embed.layers.")
    mask_features = _shape(state, f"{PIXEL}mask_features.weight", path)
    inferred: dict[str, Any] = dict(
        swin_embed_dim=_shape(state, "backbone.patch_embed.proj.weight", path)[0],
        swin_patch=_shape(state, "backbone.patch_embed.proj.weight", path)[-1],
        swin_depths=swin_depths,
        swin_heads=tuple(
            _shape(state, f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table", path)[1]
            for i in range(4)
        ),
        swin_window=(round(table[0] ** 0.5) + 1) // 2,
        conv_dim=mask_features[1],
        mask_dim=mask_features[0],
        encoder_layers=count_indexed(state, f"{PIXEL}transformer.encoder.layers."),
        encoder_feedforward=_shape(state, f"{PIXEL}transformer.encoder.layers.0.linear1.weight", path)[0],
        hidden_dim=_shape(state, f"{PRED}query_feat.weight", path)[1],
        num_queries=_shape(state, f"{PRED}query_feat.weight", path)[0],
        dim_feedforward=_shape(state, f"{PRED}transformer_ffn_layers.0.linear1.weight", path)[0],
        decoder_layers=count_indexed(state, f"{PRED}transformer_ffn_layers."),
        embed_layers=class_layers,
        embed_hidden_dim=_shape(state, f"{PRED}class_embed.layers.0.weight", path)[0],
        embedding_dim=_shape(state, f"{PRED}class_embed.layers.{class_layers - 1}.weight", path)[0],
        scan_dim=_shape(state, "oriclip_mlp.fc2.weight", path)[0],
        fusion_layers=count_indexed(state, "fusion_decoder.multiattn."),
        integration_layers=count_indexed(state, "lightweight_transformer.layers."),
        integration_feedforward=_shape(state, "lightweight_transformer.layers.0.linear1.weight", path)[0],
    )
    if preset is None:
        preset = "scan-large" if clip_layers == 24 else "scan"
    if preset not in PRESETS:
        raise CheckpointError(f"{path}: a SCAN checkpoint loads into {' or '.join(PRESETS)}, not {preset!r}")
    try:
        return PRESETS[preset]().replace(**{**inferred, **overrides})
    except (ValueError, UserError) as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_scan(path: str | Path, *, preset: str | None = None, **overrides: Any) -> Any:
    """Build the SCAN model of a SCAN checkpoint file and load its weights (float32, eval mode).

    ``preset`` (default: ``scan-large`` for a 24-layer CLIP, else ``scan``) and ``overrides`` (config fields)
    adjust what the file does not say. A file of another model raises a one-line :class:`CheckpointError`
    naming what it looks like.
    """
    from aeroseg.convert.tokenizer import clip_tokenizer
    from aeroseg.scan.model import SCAN
    from aeroseg.scan.swin_backbone import build_swin

    path = Path(path)
    state = read_state_dict(path, EXPECTED)
    if not recognise(state):
        _refuse(path, state)
    activation = overrides.get("clip_activation", "gelu")
    clip_state = {
        k[len(CLIP) :]: v for k, v in state.items() if k.startswith(CLIP) and not _DROPPED.fullmatch(k)
    }
    clip = load_original_clip_state(clip_state, path, activation=activation)
    text = {k: v for k, v in clip_state.items() if not k.startswith("visual.")}
    original = {f"visual.{k[len(ORIGINAL) :]}": v for k, v in state.items() if k.startswith(ORIGINAL)}
    global_clip = load_original_clip_state({**text, **original}, path, activation=activation)
    config = infer_config(state, path, clip.config.vision_config.num_hidden_layers, preset, **overrides)
    model = SCAN.assemble(config, clip, clip_tokenizer(), build_swin(config, pretrained=False), global_clip)
    converted, unknown = convert(state)
    wanted = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith(("global_clip.", "region_clip.", "classifier."))
    }
    wanted["classifier.non_object_embedding"] = model.classifier.non_object_embedding
    missing = [k for k in wanted if k not in converted]
    unknown += [k for k in converted if k not in wanted]
    if unknown or missing:
        _mismatch(path, unknown, missing)
    wrong = next((k for k in wanted if wanted[k].shape != converted[k].shape), None)
    if wrong is not None:
        raise CheckpointError(
            f"{path}: tensor for {wrong} has shape {tuple(converted[wrong].shape)}, the {config.preset} model "
            f"needs {tuple(wanted[wrong].shape)}"
        )
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)
    return model.eval()


def _refuse(path: Path, state: StateDict) -> None:
    """One line saying what the file looks like when it is not SCAN's."""
    looks = [what for marker, what in _OTHERS.items() if any(k.startswith(marker) for k in state)]
    if is_catseg_checkpoint(state):
        looks.insert(0, "a CAT-Seg / OVRS checkpoint (load it with preset cat-seg or ovrs)")
    if looks:
        raise CheckpointError(f"{path}: not a SCAN checkpoint: it looks like {looks[0]}")
    parts = ("backbone.", PRED, CLIP, ORIGINAL, "fusion_decoder.")
    absent = next(p for p in parts if not any(k.startswith(p) for k in state))
    raise CheckpointError(
        f"{path}: not a SCAN checkpoint: no {absent}* tensors (first tensor {next(iter(state))!r}); expected {EXPECTED}"
    )


def _mismatch(path: Path, unexpected: list[str], missing: list[str]) -> None:
    """One-line CheckpointError naming the first unexpected and the first missing tensor."""
    parts = []
    if unexpected:
        parts.append(f"first unexpected tensor {unexpected[0]!r} ({len(unexpected)} in all)")
    if missing:
        parts.append(f"first missing tensor {missing[0]!r} ({len(missing)} in all)")
    raise CheckpointError(f"{path}: not a SCAN checkpoint: {'; '.join(parts)}; expected {EXPECTED}")
