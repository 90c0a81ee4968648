"""SAM2 / SAM2.1 checkpoints (``sam2_hiera_*.pt``, ``sam2.1_hiera_*.pt``) -> ``transformers.Sam2Model``.

Converted: the image encoder (Hiera trunk + FPN neck, ``model.vision_encoder``), ``no_mem_embed`` (added to
the lowest-resolution features of single images), the prompt encoder and the mask decoder, i.e. everything the
image model uses. Skipped: the video-only memory modules (``memory_attention``, ``memory_encoder``,
``maskmem_tpos_enc``, ``no_mem_pos_enc``, ``no_obj_ptr``, ``obj_ptr_proj``, ``obj_ptr_tpos_proj``,
``mask_downsample``, ``no_obj_embed_spatial``). Mapping, original -> transformers (N, M: indices):

    image_encoder.trunk.{pos_embed,pos_embed_window} -> vision_encoder.backbone.(same)
    image_encoder.trunk.patch_embed.proj           -> vision_encoder.backbone.patch_embed.projection
    image_encoder.trunk.blocks.N.norm{1,2}         -> vision_encoder.backbone.blocks.N.layer_norm{1,2}
    image_encoder.trunk.blocks.N.{attn.qkv,attn.proj,proj} -> vision_encoder.backbone.blocks.N.(same)
    image_encoder.trunk.blocks.N.mlp.layers.{0,1}  -> vision_encoder.backbone.blocks.N.mlp.{proj_in,proj_out}
    image_encoder.neck.convs.N.conv                -> vision_encoder.neck.convs.N
    no_mem_embed                                   -> no_memory_embedding
    sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
                                                   -> shared_image_embedding.positional_embedding and
                                                      prompt_encoder.shared_embedding.positional_embedding
    sam_prompt_encoder.point_embeddings.{0..3}     -> prompt_encoder.point_embed (rows 0..3, stacked)
    sam_prompt_encoder.mask_downscaling.{0,1,3,4,6} -> prompt_encoder.mask_embed.{conv1,layer_norm1,conv2,
                                                      layer_norm2,conv3}
    sam_prompt_encoder.{not_a_point_embed,no_mask_embed} -> prompt_encoder.(same)
    sam_mask_decoder.transformer.layers.N.norm{1..4} -> mask_decoder.transformer.layers.N.layer_norm{1..4}
    sam_mask_decoder.transformer.*.out_proj        -> mask_decoder.transformer.*.o_proj
    sam_mask_decoder.transformer.layers.N.mlp.layers.{0,1} -> ...mlp.{proj_in,proj_out}
    sam_mask_decoder.transformer.norm_final_attn   -> mask_decoder.transformer.layer_norm_final_attn
    sam_mask_decoder.output_upscaling.{0,1,3}      -> mask_decoder.{upscale_conv1,upscale_layer_norm,
                                                      upscale_conv2}
    sam_mask_decoder.{output_hypernetworks_mlps.N,iou_prediction_head,pred_obj_score_head}.layers.M
                                                   -> .proj_in (first), .layers.{M-1} (middle),
                                                      .proj_out (last)
    sam_mask_decoder.{iou_token,mask_tokens,obj_score_token,conv_s0,conv_s1}, the rest of the transformer
                                                   -> mask_decoder.(same)

Hiera's head counts, global-attention blocks and window sizes are not visible in tensor shapes, so the
architecture is the shipped one whose shapes match (``aeroseg.convert.arch``), or the ``config`` given.
"""

import re
from pathlib import Path

import torch
from transformers import Sam2Config, Sam2Model

from aeroseg.convert._checkpoint import (
    StateDict,
    apply_rules,
    build_and_load,
    count_indexed,
    read_state_dict,
    reject_unknown,
    rename_mlp,
)
from aeroseg.convert.arch import ARCHITECTURES, load_arch_config
from aeroseg.errors import CheckpointError

EXPECTED = "a SAM2 / SAM2.1 checkpoint ({'model': {image_encoder.trunk.*, image_encoder.neck.*, ...}})"
VIDEO_PREFIXES = (
    "memory_attention.",
    "memory_encoder.",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "mask_downsample.",
    "no_obj_embed_spatial",
)
_P = r"(weight|bias)"
_T, _D = r"image_encoder\.trunk", r"sam_mask_decoder\.transformer"
_QKV = r"(?:q|k|v)_proj\.(?:weight|bias)"
_RULES = [
    (rf"{_T}\.(pos_embed|pos_embed_window)", r"vision_encoder.backbone.\1"),
    (rf"{_T}\.patch_embed\.proj\.{_P}", r"vision_encoder.backbone.patch_embed.projection.\1"),
    (rf"{_T}\.blocks\.(\d+)\.norm([12])\.{_P}", r"vision_encoder.backbone.blocks.\1.layer_norm\2.\3"),
    (
        rf"{_T}\.blocks\.(\d+)\.((?:attn\.qkv|attn\.proj|proj)\.(?:weight|bias))",
        r"vision_encoder.backbone.blocks.\1.\2",
    ),
    (rf"{_T}\.blocks\.(\d+)\.mlp\.layers\.0\.{_P}", r"vision_encoder.backbone.blocks.\1.mlp.proj_in.\2"),
    (rf"{_T}\.blocks\.(\d+)\.mlp\.layers\.1\.{_P}", r"vision_encoder.backbone.blocks.\1.mlp.proj_out.\2"),
    (rf"image_encoder\.neck\.convs\.(\d+)\.conv\.{_P}", r"vision_encoder.neck.convs.\1.\2"),
    (r"no_mem_embed", "no_memory_embedding"),
    (r"sam_prompt_encoder\.(not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\1.weight"),
    (rf"sam_prompt_encoder\.mask_downscaling\.0\.{_P}", r"prompt_encoder.mask_embed.conv1.\1"),
    (rf"sam_prompt_encoder\.mask_downscaling\.1\.{_P}", r"prompt_encoder.mask_embed.layer_norm1.\1"),
    (rf"sam_prompt_encoder\.mask_downscaling\.3\.{_P}", r"prompt_encoder.mask_embed.conv2.\1"),
    (rf"sam_prompt_encoder\.mask_downscaling\.4\.{_P}", r"prompt_encoder.mask_embed.layer_norm2.\1"),
    (rf"sam_prompt_encoder\.mask_downscaling\.6\.{_P}", r"prompt_encoder.mask_embed.conv3.\1"),
    (rf"{_D}\.layers\.(\d+)\.norm([1-4])\.{_P}", r"mask_decoder.transformer.layers.\1.layer_norm\2.\3"),
    (
        rf"{_D}\.(layers\.\d+\.(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
        rf"|final_attn_token_to_image)\.({_QKV})",
        r"mask_decoder.transformer.\1.\2",
    ),
    (
        rf"{_D}\.(layers\.\d+\.(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
        rf"|final_attn_token_to_image)\.out_proj\.{_P}",
        r"mask_decoder.transformer.\1.o_proj.\2",
    ),
    (rf"{_D}\.layers\.(\d+)\.mlp\.layers\.0\.{_P}", r"mask_decoder.transformer.layers.\1.mlp.proj_in.\2"),
    (rf"{_D}\.layers\.(\d+)\.mlp\.layers\.1\.{_P}", r"mask_decoder.transformer.layers.\1.mlp.proj_out.\2"),
    (rf"{_D}\.norm_final_attn\.{_P}", r"mask_decoder.transformer.layer_norm_final_attn.\1"),
    (r"sam_mask_decoder\.(iou_token|mask_tokens|obj_score_token)\.weight", r"mask_decoder.\1.weight"),
    (rf"sam_mask_decoder\.(conv_s0|conv_s1)\.{_P}", r"mask_decoder.\1.\2"),
    (rf"sam_mask_decoder\.output_upscaling\.0\.{_P}", r"mask_decoder.upscale_conv1.\1"),
    (rf"sam_mask_decoder\.output_upscaling\.1\.{_P}", r"mask_decoder.upscale_layer_norm.\1"),
    (rf"sam_mask_decoder\.output_upscaling\.3\.{_P}", r"mask_decoder.upscale_conv2.\1"),
]
_MLP = (
    r"sam_mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head)"
    r"\.layers\.\d+\.(?:weight|bias)"
)
_POINTS = r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight"


def _convert(state: StateDict, path: Path) -> StateDict:
    out: StateDict = {}
    unknown, points = [], {}
    for key, value in state.items():
        if key.startswith(VIDEO_PREFIXES):
            continue
        if key == "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix":
            out["shared_image_embedding.positional_embedding"] = value
            out["prompt_encoder.shared_embedding.positional_embedding"] = value
        elif (new := apply_rules(key, _RULES)) is not None:
            out[new] = value
        elif re.fullmatch(_MLP, key):
            stem = key.rsplit(".layers.", 1)[0]
            new = rename_mlp(key, count_indexed(state, f"{stem}.layers."))
            out[new.replace("sam_mask_decoder.", "mask_decoder.", 1)] = value
        elif match := re.fullmatch(_POINTS, key):
            points[int(match.group(1))] = value  # (1, dim) each
        else:
            unknown.append(key)
    reject_unknown(unknown, path, EXPECTED)
    if points:
        out["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in range(len(points))])
    return out


def _shapes(state: StateDict) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def _matching_config(converted: StateDict, path: Path) -> Sam2Config:
    """The first shipped SAM2 architecture whose ``Sam2Model`` has exactly the converted tensors' shapes."""
    wanted = _shapes(converted)
    names = [name for name in ARCHITECTURES if name.startswith("sam2")]
    for name in names:
        config = load_arch_config(name)
        with torch.device("meta"):
            model = Sam2Model(config)
        if _shapes(model.state_dict()) == wanted:
            return config
    raise CheckpointError(
        f"{path}: its Hiera / FPN shapes match none of the shipped SAM2 architectures ({', '.join(names)}); "
        "pass config= (a transformers.Sam2Config)"
    )


def load_original_sam2(path: str | Path, *, config: Sam2Config | None = None) -> Sam2Model:
    """Load a SAM2 / SAM2.1 ``.pt`` checkpoint as a ``transformers.Sam2Model`` (float32, eval mode).

    ``config`` defaults to the shipped architecture whose shapes match (``sam2-hiera-b+`` and
    ``sam2.1-hiera-b+`` have the same image-model architecture). Offline; errors are one-line
    ``CheckpointError``s.
    """
    path = Path(path)
    converted = _convert(read_state_dict(path, EXPECTED), path)
    config = config if config is not None else _matching_config(converted, path)
    return build_and_load(Sam2Model, config, converted, path, EXPECTED)
