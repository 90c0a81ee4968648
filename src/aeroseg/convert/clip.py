"""OpenAI CLIP and open_clip ViT checkpoints -> ``transformers.CLIPModel``, by renaming tensors at load time.

Accepted files: OpenAI's TorchScript ``.pt`` archives, and ``.pt`` / ``.bin`` / ``.safetensors`` state dicts
in the same key layout (open_clip; GeoRSCLIP, SkyCLIP and RemoteCLIP publish these).
Mapping, original -> transformers:

    visual.conv1.weight                -> vision_model.embeddings.patch_embedding.weight
    visual.class_embedding             -> vision_model.embeddings.class_embedding
    visual.positional_embedding        -> vision_model.embeddings.position_embedding.weight
    visual.ln_pre                      -> vision_model.pre_layrnorm
    visual.transformer.resblocks.N.*   -> vision_model.encoder.layers.N.*   (block table below)
    visual.ln_post                     -> vision_model.post_layernorm
    visual.proj (width x embed)        -> visual_projection.weight          (transposed)
    token_embedding.weight             -> text_model.embeddings.token_embedding.weight
    positional_embedding               -> text_model.embeddings.position_embedding.weight
    transformer.resblocks.N.*          -> text_model.encoder.layers.N.*     (block table below)
    ln_final                           -> text_model.final_layer_norm
    text_projection (width x embed)    -> text_projection.weight            (transposed)
    logit_scale                        -> logit_scale

    block: ln_1 -> layer_norm1; attn.in_proj_{weight,bias} -> self_attn.{q,k,v}_proj.{weight,bias} (split in
    three along dim 0, in q, k, v order); attn.out_proj -> self_attn.out_proj; ln_2 -> layer_norm2;
    mlp.c_fc -> mlp.fc1; mlp.c_proj -> mlp.fc2

OpenAI's scalar tensors ``input_resolution``, ``context_length`` and ``vocab_size`` are dropped; any other
tensor not in the table (ResNet towers, attention pooling, layer scale, ...) is an error.
"""

import json
from math import isqrt
from pathlib import Path

from transformers import CLIPConfig, CLIPModel

from aeroseg.convert._checkpoint import (
    StateDict,
    build_and_load,
    count_indexed,
    is_torchscript,
    read_state_dict,
    reject_unknown,
    require,
)
from aeroseg.errors import CheckpointError, UserError

EXPECTED = "an OpenAI CLIP or open_clip ViT checkpoint (visual.conv1, visual.transformer.resblocks.N, ...)"
HEAD_WIDTH = 64  # OpenAI CLIP: num_heads = width // 64 in both towers
_IGNORED = {"input_resolution", "context_length", "vocab_size"}
_TOWERS = (
    ("visual.transformer.resblocks.", "vision_model.encoder.layers."),
    ("transformer.resblocks.", "text_model.encoder.layers."),
)
_BLOCK = {
    "ln_1": "layer_norm1",
    "attn.out_proj": "self_attn.out_proj",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_TOP = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}


def _heads(width: int, tower: str, path: Path) -> int:
    if width % HEAD_WIDTH:
        raise CheckpointError(
            f"{path}: {tower} width {width} is not a multiple of {HEAD_WIDTH}; expected {EXPECTED}"
        )
    return width // HEAD_WIDTH


def _infer_config(state: StateDict, path: Path, hidden_act: str) -> CLIPConfig:
    """Architecture from tensor shapes: widths, depths, patch and image size, context, vocab, embed dim."""
    conv1 = require(state, "visual.conv1.weight", path, EXPECTED)  # (width, 3, patch, patch)
    v_width, patch = conv1.shape[0], conv1.shape[-1]
    v_pos = require(state, "visual.positional_embedding", path, EXPECTED)  # (grid * grid + 1, width)
    grid = isqrt(v_pos.shape[0] - 1)
    if grid * grid + 1 != v_pos.shape[0]:
        raise CheckpointError(
            f"{path}: visual.positional_embedding has {v_pos.shape[0]} rows, not grid**2 + 1"
        )
    token_embedding = require(state, "token_embedding.weight", path, EXPECTED)  # (vocab, width)
    vocab, t_width = token_embedding.shape
    embed_dim = require(state, "text_projection", path, EXPECTED).shape[1]  # (width, embed)
    if require(state, "visual.proj", path, EXPECTED).shape[1] != embed_dim:
        raise CheckpointError(f"{path}: visual.proj and text_projection disagree on the embedding size")
    common = {"hidden_act": hidden_act, "projection_dim": embed_dim}
    vision = {
        "hidden_size": v_width,
        "intermediate_size": require(state, f"{_TOWERS[0][0]}0.mlp.c_fc.weight", path, EXPECTED).shape[0],
        "num_hidden_layers": count_indexed(state, _TOWERS[0][0]),
        "num_attention_heads": _heads(v_width, "vision", path),
        "patch_size": patch,
        "image_size": grid * patch,
        **common,
    }
    text = {
        "hidden_size": t_width,
        "intermediate_size": require(state, f"{_TOWERS[1][0]}0.mlp.c_fc.weight", path, EXPECTED).shape[0],
        "num_hidden_layers": count_indexed(state, _TOWERS[1][0]),
        "num_attention_heads": _heads(t_width, "text", path),
        "max_position_embeddings": require(state, "positional_embedding", path, EXPECTED).shape[0],
        "vocab_size": vocab,
        # <|startoftext|> and <|endoftext|> are the last two ids; pooling reads the <|endoftext|> position,
        # which is OpenAI's argmax over token ids
        "bos_token_id": vocab - 2,
        "eos_token_id": vocab - 1,
        "pad_token_id": vocab - 1,
        **common,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=embed_dim)


def _convert(state: StateDict, path: Path) -> StateDict:
    out: StateDict = {}
    unknown = []
    for key, value in state.items():
        if key in _IGNORED:
            continue
        if key in _TOP:
            out[_TOP[key]] = value
            continue
        if key in _TRANSPOSED:
            out[_TRANSPOSED[key]] = value.t().contiguous()
            continue
        tower = next(((src, dst) for src, dst in _TOWERS if key.startswith(src)), None)
        if tower is None:
            unknown.append(key)
            continue
        index, rest = key[len(tower[0]) :].split(".", 1)
        block = f"{tower[1]}{index}."
        module, param = rest.rsplit(".", 1)
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            for name, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{block}self_attn.{name}_proj.{kind}"] = chunk.contiguous()
        elif module in _BLOCK:
            out[f"{block}{_BLOCK[module]}.{param}"] = value
        else:
            unknown.append(key)
    reject_unknown(unknown, path, EXPECTED)
    return out


ACTIVATIONS = ("auto", "quick_gelu", "gelu")


def detect_activation(path: Path, state: StateDict) -> str:
    """The MLP activation a CLIP file was trained with, where the file says it.

    QuickGELU: OpenAI's TorchScript archives and state dicts that keep OpenAI's scalar tensors
    (``input_resolution``, ...), files named ``*quickgelu*`` (open_clip's ``-quickgelu`` model names), and
    files beside an ``open_clip_config.json`` whose ``model_cfg`` sets ``quick_gelu``. Any other open_clip file:
    GELU, open_clip's default (``quick_gelu: false`` in every model config that does not end in -quickgelu).
    """
    if is_torchscript(path) or any(k in state for k in _IGNORED):
        return "quick_gelu"
    if "quickgelu" in path.name.lower().replace("_", "").replace("-", ""):
        return "quick_gelu"
    config = path.parent / "open_clip_config.json"
    if config.is_file():
        try:
            model_cfg = json.loads(config.read_text()).get("model_cfg", {})
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise CheckpointError(f"{config}: not a readable open_clip config") from None
        return "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
    return "gelu"


def load_original_clip(path: str | Path, *, hidden_act: str = "auto") -> CLIPModel:
    """Load an OpenAI CLIP or open_clip ViT checkpoint as a ``transformers.CLIPModel`` (float32, eval mode).

    The architecture is inferred from tensor shapes; attention heads are ``width // 64`` (OpenAI's rule, true
    for ViT-B and ViT-L; open_clip's ViT-H/g use other head widths and are not supported). ``hidden_act`` is
    ``"quick_gelu"`` (OpenAI weights and open_clip models trained with QuickGELU), ``"gelu"`` (other open_clip
    models, trained with nn.GELU) or ``"auto"``: read from the file by :func:`detect_activation`. Offline;
    errors are one-line ``CheckpointError``s naming the file.
    """
    path = Path(path)
    if hidden_act not in ACTIVATIONS:
        raise UserError(f"hidden_act must be one of {', '.join(ACTIVATIONS)}, not {hidden_act!r}")
    state = read_state_dict(path, EXPECTED)
    if hidden_act == "auto":
        hidden_act = detect_activation(path, state)
    return load_original_clip_state(state, path, activation=hidden_act)


def load_original_clip_state(state: StateDict, path: Path, *, activation: str = "quick_gelu") -> CLIPModel:
    """:func:`load_original_clip` on tensors already read from ``path`` ("auto" = QuickGELU, OpenAI's)."""
    if activation not in ACTIVATIONS:
        raise UserError(f"hidden_act must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
    if "visual.conv1.weight" not in state and any(
        k.startswith(("visual.layer1.", "visual.attnpool.")) for k in state
    ):
        raise CheckpointError(f"{path}: is a ResNet CLIP; only ViT CLIP checkpoints are supported")
    config = _infer_config(state, path, "quick_gelu" if activation == "auto" else activation)
    return build_and_load(CLIPModel, config, _convert(state, path), path, EXPECTED)
