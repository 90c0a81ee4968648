"""Microsoft's Swin Transformer layout -> ``transformers.SwinBackbone``, by renaming tensors.

The layout is that of ``microsoft/Swin-Transformer`` checkpoints (``swin_base_patch4_window12_384_22k.pth``) and
of detectron2's ``D2SwinTransformer`` (Mask2Former ``modeling/backbone/swin.py``; under ``backbone.`` in a
SCAN or Mask2Former checkpoint). Mapping, theirs -> ours (``L`` = ``swin.encoder.layers.i``, ``B`` =
``L.blocks.j``)::

    patch_embed.proj                 -> swin.embeddings.patch_embeddings.projection
    patch_embed.norm                 -> swin.embeddings.norm
    layers.i.blocks.j.norm1 / norm2  -> B.layernorm_before / B.layernorm_after
    layers.i.blocks.j.attn.qkv       -> B.attention.{q,k,v}_proj (split in three along dim 0)
    layers.i.blocks.j.attn.proj      -> B.attention.o_proj
    layers.i.blocks.j.attn.relative_position_bias_table
                                     -> B.attention.relative_position_bias.relative_position_bias_table
    layers.i.blocks.j.mlp.fc1 / fc2  -> B.mlp.fc1 / fc2
    layers.i.downsample.{reduction,norm} -> L.downsample.{reduction,norm}
    norm{i} (detectron2's per-stage output norms) -> hidden_states_norms.stage{i+1}

Dropped: ``relative_position_index`` and ``attn_mask`` buffers (recomputed), and the classifier's ``norm`` and
``head`` of a Microsoft release (detectron2 does not load them either).
"""

from __future__ import annotations

import re

from aeroseg.convert._checkpoint import StateDict, apply_rules

_B, _BO = r"layers\.(\d+)\.blocks\.(\d+)\.", r"swin.encoder.layers.\1.blocks.\2."
_RULES = [
    (r"patch_embed\.proj\.(weight|bias)", r"swin.embeddings.patch_embeddings.projection.\1"),
    (r"patch_embed\.norm\.(weight|bias)", r"swin.embeddings.norm.\1"),
    (rf"{_B}norm1\.(weight|bias)", rf"{_BO}layernorm_before.\3"),
    (rf"{_B}norm2\.(weight|bias)", rf"{_BO}layernorm_after.\3"),
    (rf"{_B}attn\.proj\.(weight|bias)", rf"{_BO}attention.o_proj.\3"),
    (rf"{_B}attn\.(relative_position_bias_table)", rf"{_BO}attention.relative_position_bias.\3"),
    (rf"{_B}mlp\.(fc1|fc2)\.(weight|bias)", rf"{_BO}mlp.\3.\4"),
    (r"layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)", r"swin.encoder.layers.\1.downsample.\2.\3"),
]  # fmt: skip
_QKV = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)")
_STAGE_NORM = re.compile(r"norm(\d)\.(weight|bias)")
DROPPED = re.compile(r"(.*\.relative_position_index|.*\.attn_mask|norm\.(weight|bias)|head\..*)")


def convert_swin(state: StateDict) -> tuple[StateDict, list[str]]:
    """Our tensors for the Swin tensors of ``state`` (keys without prefix), and the keys no rule converts."""
    out: StateDict = {}
    unknown = []
    for key, value in state.items():
        if DROPPED.fullmatch(key):
            continue
        renamed = apply_rules(key, _RULES)
        qkv, stage = _QKV.fullmatch(key), _STAGE_NORM.fullmatch(key)
        if renamed is not None:
            out[renamed] = value
        elif qkv:
            layer, block, kind = qkv.groups()
            for name, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"swin.encoder.layers.{layer}.blocks.{block}.attention.{name}_proj.{kind}"] = (
                    chunk.contiguous()
                )
        elif stage:
            out[f"hidden_states_norms.stage{int(stage.group(1)) + 1}.{stage.group(2)}"] = value
        else:
            unknown.append(key)
    return out, unknown
