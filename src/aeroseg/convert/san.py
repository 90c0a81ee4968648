"""SAN checkpoints (``MendelXu/SAN``) -> :class:`aeroseg.san.SAN` (presets ``san``, ``san-large``), by renaming
tensors at load time.

Accepted: what SAN's detectron2 trainer writes, ``{"model": state_dict, ...}`` (or the bare state dict), read
with ``torch.load(weights_only=True)``: the released ``san_vit_b_16.pth`` (CLIP ViT-B/16) and
``san_vit_large_14.pth`` (ViT-L/14@336). Mapping, theirs -> ours (``S`` = ``side_adapter_network.``,
``V`` = ``S`` + ``vit_model.``, i = block):

    clip_visual_extractor.{conv1, class_embedding, positional_embedding, ln_pre, resblocks.i}
        + clip_rec_head.{resblocks.j, ln_post, proj} + ov_classifier.{token_embedding, positional_embedding,
        transformer, ln_final, text_projection, logit_scale}
                                     -> one OpenAI-layout CLIP (visual.transformer.resblocks.(n + j) for the
                                        rec head's layer j, n = the extractor's layers) -> transformers
                                        CLIPModel (:mod:`aeroseg.convert.clip`), QuickGELU (open_clip's
                                        ``openai`` models), split into clip_features / recognition / classifier
    ov_classifier.bg_embed           -> classifier.bg_embed
    V patch_embed.proj               -> side_adapter.patch_embed
    V pos_embed, S query_embed, S query_pos_embed -> side_adapter.{pos_embed, query_embed, query_pos_embed}
    V blocks.i.norm1 / norm2         -> side_adapter.blocks.i.layernorm_before / layernorm_after
    V blocks.i.attn.qkv              -> side_adapter.blocks.i.attention.{q,k,v}_proj (split in three, q k v)
    V blocks.i.attn.proj             -> side_adapter.blocks.i.attention.o_proj
    V blocks.i.mlp.fc1 / fc2         -> side_adapter.blocks.i.mlp.fc1 / fc2
    S fusion_layers.layer_k.input_proj.{0,1} -> side_adapter.fusion_layers.layer_k.input_proj.{0,1}
    S mask_decoder.*                 -> side_adapter.mask_decoder.* (same names)

Dropped: ``criterion.empty_weight`` and ``ov_classifier.attn_mask`` (buffers, recomputed). The widths, depths,
queries and side grid are read from tensor shapes; the preset (``san`` for a patch-16 CLIP, ``san-large``
for patch 14) gives what shapes do not say: the CLIP resolution, the CLIP layers of the fusion map, the
supervised blocks, the side adapter's heads.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from aeroseg.convert._checkpoint import StateDict, count_indexed, read_state_dict, require
from aeroseg.convert.catseg import is_catseg_checkpoint
from aeroseg.convert.clip import load_original_clip_state
from aeroseg.errors import CheckpointError

EXPECTED = (
    "a SAN checkpoint (side_adapter_network.*, clip_visual_extractor.*, clip_rec_head.*, ov_classifier.*)"
)
S, V = "side_adapter_network.", "side_adapter_network.vit_model."
EXTRACTOR, REC, CLASSIFIER = "clip_visual_extractor.", "clip_rec_head.", "ov_classifier."
DROPPED = ("criterion.empty_weight", "ov_classifier.attn_mask")
_BLOCK = re.compile(
    rf"{re.escape(V)}blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
)
_BLOCK_PARTS = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def recognise(state: StateDict) -> bool:
    """Whether ``state`` is in SAN's layout (its side adapter, its CLIP recognition head and classifier)."""
    return all(any(k.startswith(p) for k in state) for p in (S, REC, CLASSIFIER, EXTRACTOR))


def _what_it_looks_like(state: StateDict) -> str:
    if is_catseg_checkpoint(state):
        return "a CAT-Seg / OVRS checkpoint (load it with preset cat-seg or ovrs)"
    if "visual.conv1.weight" in state:
        return "a CLIP checkpoint"
    return f"not a SAN checkpoint (first tensor {sorted(state)[0]!r})"


def _clip_state(state: StateDict) -> StateDict:
    """SAN's three pieces of CLIP joined into one OpenAI-layout state dict."""
    n = count_indexed(state, f"{EXTRACTOR}resblocks.")
    clip: StateDict = {}
    for key, value in state.items():
        if key.startswith(f"{EXTRACTOR}resblocks."):
            clip["visual.transformer." + key[len(EXTRACTOR) :]] = value
        elif key.startswith(EXTRACTOR):
            clip["visual." + key[len(EXTRACTOR) :]] = value
        elif key.startswith(f"{REC}resblocks."):
            j, rest = key[len(f"{REC}resblocks.") :].split(".", 1)
            clip[f"visual.transformer.resblocks.{n + int(j)}.{rest}"] = value
        elif key.startswith(REC):
            clip["visual." + key[len(REC) :]] = value
        elif key.startswith(CLASSIFIER) and key not in DROPPED and key != f"{CLASSIFIER}bg_embed":
            clip[key[len(CLASSIFIER) :]] = value
    return clip


def _side_adapter_state(state: StateDict) -> tuple[StateDict, list[str]]:
    """Our side adapter and background tensors, and the keys no rule converts."""
    out: StateDict = {}
    unknown = []
    for key, value in state.items():
        if key in DROPPED or (
            key.startswith((EXTRACTOR, REC, CLASSIFIER)) and key != f"{CLASSIFIER}bg_embed"
        ):
            continue
        block = _BLOCK.fullmatch(key)
        if key == f"{CLASSIFIER}bg_embed":
            out["classifier.bg_embed"] = value
        elif block:
            i, part, param = block.groups()
            stem = f"side_adapter.blocks.{i}."
            if part == "attn.qkv":
                for name, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                    out[f"{stem}attention.{name}_proj.{param}"] = chunk.contiguous()
            else:
                out[f"{stem}{_BLOCK_PARTS[part]}.{param}"] = value
        elif key in (f"{V}patch_embed.proj.weight", f"{V}patch_embed.proj.bias"):
            out["side_adapter.patch_embed." + key.rsplit(".", 1)[1]] = value
        elif key == f"{V}pos_embed":
            out["side_adapter.pos_embed"] = value
        elif key in (f"{S}query_embed", f"{S}query_pos_embed") or key.startswith(
            (f"{S}fusion_layers.", f"{S}mask_decoder.")
        ):
            out["side_adapter." + key[len(S) :]] = value
        else:
            unknown.append(key)
    return out, unknown


def infer_config(state: StateDict, path: Path, patch: int, preset: str | None, **overrides: Any) -> Any:
    """The SAN config of a SAN state dict: the preset's, with the sizes read from the file."""
    from aeroseg.san.config import PRESETS

    preset = preset or ("san" if patch == 16 else "san-large")
    if preset not in PRESETS:
        raise CheckpointError(f"{path}: a SAN checkpoint loads into preset san or san-large, not {preset!r}")
    base = PRESETS[preset]()
    shape = lambda key: require(state, key, path, EXPECTED).shape  # noqa: E731
    patch_embed = shape(f"{V}patch_embed.proj.weight")  # (width, 3, patch, patch)
    width, side_patch = patch_embed[0], patch_embed[-1]
    grid = math.isqrt(shape(f"{V}pos_embed")[1])
    mlp = f"{S}mask_decoder.query_mlp.layers."
    mlp_layers = count_indexed(state, mlp)
    embed = shape(f"{mlp}{mlp_layers - 1}.weight")[0]
    sides = sorted(
        int(k.split(".")[2].removeprefix("layer_")) for k in state if k.startswith(f"{S}fusion_layers.")
    )
    sides = sorted(set(sides))
    fusion = base.fusion_map
    if [s for _, s in base.fusion_pairs] != sides and "fusion_map" not in overrides:
        raise CheckpointError(
            f"{path}: fusion layers after side blocks {sides}, the {preset} preset fuses after "
            f"{[s for _, s in base.fusion_pairs]}; pass fusion_map"
        )
    bias_out = shape(f"{S}mask_decoder.attn_mlp.layers.{mlp_layers - 1}.weight")[0]
    layers = overrides.get("attn_bias_layers", base.attn_bias_layers)
    inferred = dict(
        clip=str(path),
        feature_last_layer=count_indexed(state, f"{EXTRACTOR}resblocks."),
        side_width=width,
        side_patch=side_patch,
        side_depth=count_indexed(state, f"{V}blocks."),
        side_mlp_ratio=shape(f"{V}blocks.0.mlp.fc1.weight")[0] / width,
        side_image_size=grid * side_patch,
        num_queries=shape(f"{S}query_embed")[1],
        fusion_map=fusion,
        embed_channels=embed,
        mlp_channels=shape(f"{mlp}0.weight")[0],
        mlp_layers=mlp_layers,
        attn_bias_heads=bias_out // (embed * layers),
        rescale_attn_bias=f"{S}mask_decoder.bias_scaling.weight" in state,
    )
    try:
        return base.replace(**{**inferred, **overrides})
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_san(path: str | Path, preset: str | None = None, **overrides: Any) -> Any:
    """Build the SAN model of a SAN checkpoint file and load its weights (float32, eval mode).

    ``preset`` (default: ``san`` for a CLIP of patch 16, ``san-large`` for patch 14) and ``overrides`` (SAN
    config fields) adjust what the file does not say. A file of another model raises a one-line
    :class:`CheckpointError` saying what it looks like; a SAN file that does not fit names its first
    unexpected or missing tensor.
    """
    from aeroseg.convert.tokenizer import clip_tokenizer
    from aeroseg.san.model import SAN

    path = Path(path)
    state = read_state_dict(path, EXPECTED)
    if not recognise(state):
        raise CheckpointError(f"{path}: {_what_it_looks_like(state)}; expected {EXPECTED}")
    clip = load_original_clip_state(
        _clip_state(state), path, activation=overrides.get("clip_activation", "quick_gelu")
    )
    config = infer_config(state, path, clip.config.vision_config.patch_size, preset, **overrides)
    model = SAN.assemble(config, clip, clip_tokenizer())
    converted, unexpected = _side_adapter_state(state)
    wanted = {
        k: v for k, v in model.state_dict().items() if k.startswith(("side_adapter.", "classifier.bg_embed"))
    }
    missing = [k for k in wanted if k not in converted]
    unexpected += [k for k in converted if k not in wanted]
    if unexpected or missing:
        parts = [f"first unexpected tensor {unexpected[0]!r}" if unexpected else "", ""]
        parts[1] = f"first missing tensor {missing[0]!r}" if missing else ""
        raise CheckpointError(
            f"{path}: does not fit SAN ({'; '.join(p for p in parts if p)}); expected {EXPECTED}"
        )
    wrong = next((k for k in wanted if wanted[k].shape != converted[k].shape), None)
    if wrong is not None:
        raise CheckpointError(
            f"{path}: tensor for {wrong} has shape {tuple(converted[wrong].shape)}, the model needs "
            f"{tuple(wanted[wrong].shape)}"
        )
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)
    return model.eval()


__all__ = ["EXPECTED", "infer_config", "load_san", "recognise"]
