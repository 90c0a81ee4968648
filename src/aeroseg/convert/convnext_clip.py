"""open_clip ConvNeXt CLIP checkpoints -> ``transformers`` parts, by renaming tensors at load time.

Accepted: the state dict of open_clip's ``CLIP`` class with a timm ConvNeXt image tower
(``convnext_base_w_320``, ``convnext_large_d_320``, ...: ``open_clip_pytorch_model.bin`` or
``open_clip_model.safetensors`` of a hub repository such as
``laion/CLIP-convnext_base_w_320-laion_aesthetic-s13B-b82K``), with or without a prefix (SED's checkpoints
hold it under ``sem_seg_head.predictor.clip_model.``). Mapping, open_clip -> ours (``T`` = ``visual.trunk.``;
the image tower's names are those of :class:`aeroseg.sed.hierarchical_encoder.HierarchicalEncoder`, the text
tower's those of ``transformers.CLIPTextModelWithProjection``):

    T stem.0                        -> trunk.embeddings.patch_embeddings        (ConvNextModel)
    T stem.1                        -> trunk.embeddings.layernorm
    T stages.i.downsample.{0,1}     -> trunk.encoder.stages.i.downsampling_layer.{0,1}
    T stages.i.blocks.j.conv_dw     -> trunk.encoder.stages.i.layers.j.dwconv
    T stages.i.blocks.j.norm        -> trunk.encoder.stages.i.layers.j.layernorm
    T stages.i.blocks.j.mlp.fc{1,2} -> trunk.encoder.stages.i.layers.j.pwconv{1,2}
    T stages.i.blocks.j.gamma       -> trunk.encoder.stages.i.layers.j.layer_scale_parameter
    T head.norm                     -> trunk.layernorm  (timm's head norm, applied per position by SED)
    visual.head.proj                -> head.proj        (timm_proj "linear")
    visual.head.mlp.fc{1,2}         -> head.fc{1,2}     (timm_proj "mlp")
    token_embedding.weight          -> text_model.embeddings.token_embedding.weight
    positional_embedding            -> text_model.embeddings.position_embedding.weight
    transformer.resblocks.N.*       -> text_model.encoder.layers.N.*  (blocks as in :mod:`aeroseg.convert.clip`)
    ln_final                        -> text_model.final_layer_norm
    text_projection (width x embed) -> text_projection.weight  (transposed)

``logit_scale`` is dropped (SED computes it and does not use it). The architecture is read from the shapes:
stage depths and widths, the head kind, the embedding width, the text width, depth, context and vocabulary
(heads: width // 64, as every open_clip ConvNeXt text tower); what shapes do not say (stochastic depth and
head dropout rates) comes from the ``template`` architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aeroseg.convert._checkpoint import StateDict, count_indexed, reject_unknown, require
from aeroseg.errors import CheckpointError

EXPECTED = "an open_clip ConvNeXt CLIP checkpoint (visual.trunk.stem.0, visual.trunk.stages.N, ...)"
HEAD_WIDTH = 64  # open_clip ConvNeXt text towers: heads = width // 64
_TRUNK = "visual.trunk."
_BLOCK = {"conv_dw": "dwconv", "norm": "layernorm", "mlp.fc1": "pwconv1", "mlp.fc2": "pwconv2"}
_VISUAL_TOP = {
    "stem.0": "trunk.embeddings.patch_embeddings",
    "stem.1": "trunk.embeddings.layernorm",
    "head.norm": "trunk.layernorm",
}
_HEAD = {
    "visual.head.proj": "head.proj",
    "visual.head.mlp.fc1": "head.fc1",
    "visual.head.mlp.fc2": "head.fc2",
}
_TEXT_TOP = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_TEXT_BLOCK = {
    "ln_1": "layer_norm1",
    "attn.out_proj": "self_attn.out_proj",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_IGNORED = {"logit_scale"}


def is_convnext_clip(state: StateDict, prefix: str = "") -> bool:
    """Whether ``state`` holds an open_clip ConvNeXt CLIP (under ``prefix``)."""
    return f"{prefix}{_TRUNK}stem.0.weight" in state and f"{prefix}text_projection" in state


def infer_architecture(state: StateDict, path: Path, template: dict[str, Any]) -> dict[str, Any]:
    """The architecture dict (see :mod:`aeroseg.sed.convnext_clip`) of an open_clip ConvNeXt CLIP state dict;
    ``template`` gives what shapes do not say."""
    depths, dims = [], []
    for i in range(count_indexed(state, f"{_TRUNK}stages.")):
        depths.append(count_indexed(state, f"{_TRUNK}stages.{i}.blocks."))
        dims.append(require(state, f"{_TRUNK}stages.{i}.blocks.0.conv_dw.weight", path, EXPECTED).shape[0])
    if not depths or not all(depths):
        raise CheckpointError(
            f"{path}: no ConvNeXt stages under {_TRUNK}stages.N.blocks.M; expected {EXPECTED}"
        )
    if "visual.head.proj.weight" in state:
        head, embed = "linear", state["visual.head.proj.weight"].shape[0]
    elif "visual.head.mlp.fc2.weight" in state:
        head, embed = "mlp", state["visual.head.mlp.fc2.weight"].shape[0]
    else:
        raise CheckpointError(f"{path}: no visual.head.proj or visual.head.mlp tensors; expected {EXPECTED}")
    vocab, width = require(state, "token_embedding.weight", path, EXPECTED).shape
    if width % HEAD_WIDTH:
        raise CheckpointError(f"{path}: text width {width} is not a multiple of {HEAD_WIDTH}")
    if require(state, "text_projection", path, EXPECTED).shape != (width, embed):
        raise CheckpointError(f"{path}: text_projection and the visual head disagree on the embedding width")
    vision = {**template["vision"], "depths": depths, "hidden_sizes": dims, "num_stages": len(depths)}
    text = {
        **template["text"],
        "hidden_size": width,
        "intermediate_size": require(state, "transformer.resblocks.0.mlp.c_fc.weight", path, EXPECTED).shape[
            0
        ],
        "num_hidden_layers": count_indexed(state, "transformer.resblocks."),
        "num_attention_heads": width // HEAD_WIDTH,
        "max_position_embeddings": require(state, "positional_embedding", path, EXPECTED).shape[0],
        "vocab_size": vocab,
        "projection_dim": embed,
    }
    return {**template, "vision": vision, "text": text, "embed_dim": embed, "head": head}


def convert_state(state: StateDict, path: Path) -> tuple[StateDict, StateDict]:
    """``(image tower, text tower)`` tensors of an open_clip ConvNeXt CLIP state dict, in our names."""
    visual: StateDict = {}
    text: StateDict = {}
    unknown = []
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if key in _IGNORED:
            continue
        if key in _TEXT_TOP:
            text[_TEXT_TOP[key]] = value
        elif key == "text_projection":
            text["text_projection.weight"] = value.t().contiguous()
        elif module in _HEAD:
            visual[f"{_HEAD[module]}.{param}"] = value
        elif key.startswith(_TRUNK) and (name := _trunk_name(key[len(_TRUNK) :])) is not None:
            visual[name] = value
        elif key.startswith("transformer.resblocks.") and (block := _text_block(key, value)) is not None:
            text.update(block)
        else:
            unknown.append(key)
    reject_unknown(unknown, path, EXPECTED)
    return visual, text


def _trunk_name(key: str) -> str | None:
    module, _, param = key.rpartition(".")
    if module in _VISUAL_TOP:
        return f"{_VISUAL_TOP[module]}.{param}"
    parts = key.split(".")
    if parts[0] != "stages" or len(parts) < 4:
        return None
    stage = f"trunk.encoder.stages.{parts[1]}"
    if parts[2] == "downsample" and parts[3] in ("0", "1") and len(parts) == 5:
        return f"{stage}.downsampling_layer.{parts[3]}.{parts[4]}"
    if parts[2] != "blocks" or len(parts) < 5:
        return None
    rest = ".".join(parts[4:])
    if rest == "gamma":
        return f"{stage}.layers.{parts[3]}.layer_scale_parameter"
    block_module, _, param = rest.rpartition(".")
    if block_module in _BLOCK:
        return f"{stage}.layers.{parts[3]}.{_BLOCK[block_module]}.{param}"
    return None


def _text_block(key: str, value: torch.Tensor) -> StateDict | None:
    index, rest = key[len("transformer.resblocks.") :].split(".", 1)
    block = f"text_model.encoder.layers.{index}."
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = rest.rsplit("_", 1)[1]
        return {
            f"{block}self_attn.{name}_proj.{kind}": chunk.contiguous()
            for name, chunk in zip("qkv", value.chunk(3, dim=0), strict=True)
        }
    module, _, param = rest.rpartition(".")
    if module in _TEXT_BLOCK:
        return {f"{block}{_TEXT_BLOCK[module]}.{param}": value}
    return None
