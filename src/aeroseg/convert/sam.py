"""segment-anything checkpoints (``sam_vit_{b,l,h}_*.pth``) -> ``transformers.SamModel``, renamed at load.

All three parts are converted: image encoder, prompt encoder and mask decoder. Mapping, original ->
transformers (N: block / layer index, M: MLP layer index):

    image_encoder.pos_embed                        -> vision_encoder.pos_embed
    image_encoder.patch_embed.proj                 -> vision_encoder.patch_embed.projection
    image_encoder.blocks.N.norm{1,2}               -> vision_encoder.layers.N.layer_norm{1,2}
    image_encoder.blocks.N.{attn.qkv,attn.proj,attn.rel_pos_h,attn.rel_pos_w,mlp.lin1,mlp.lin2}
                                                   -> vision_encoder.layers.N.(same)
    image_encoder.neck.{0,1,2,3}                   -> vision_encoder.neck.{conv1,layer_norm1,conv2,
                                                      layer_norm2}
    prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
                                                   -> shared_image_embedding.positional_embedding and
                                                      prompt_encoder.shared_embedding.positional_embedding
    prompt_encoder.point_embeddings.N              -> prompt_encoder.point_embed.N
    prompt_encoder.{not_a_point_embed,no_mask_embed} -> prompt_encoder.(same)
    prompt_encoder.mask_downscaling.{0,1,3,4,6}    -> prompt_encoder.mask_embed.{conv1,layer_norm1,conv2,
                                                      layer_norm2,conv3}
    mask_decoder.transformer.layers.N.norm{1..4}   -> mask_decoder.transformer.layers.N.layer_norm{1..4}
    mask_decoder.transformer.norm_final_attn       -> mask_decoder.transformer.layer_norm_final_attn
    mask_decoder.transformer.* (attention, mlp.lin{1,2}), iou_token, mask_tokens -> (same)
    mask_decoder.output_upscaling.{0,1,3}          -> mask_decoder.{upscale_conv1,upscale_layer_norm,
                                                      upscale_conv2}
    mask_decoder.{output_hypernetworks_mlps.N,iou_prediction_head}.layers.M
                                                   -> .proj_in (first), .layers.{M-1} (middle),
                                                      .proj_out (last)

``pixel_mean`` / ``pixel_std`` (input normalisation constants, not weights) are dropped.
"""

import re
from pathlib import Path

from transformers import SamConfig, SamModel

from aeroseg.convert._checkpoint import (
    StateDict,
    apply_rules,
    build_and_load,
    count_indexed,
    read_state_dict,
    reject_unknown,
    rename_mlp,
    require,
)
from aeroseg.errors import CheckpointError

EXPECTED = "a segment-anything checkpoint (image_encoder.*, prompt_encoder.*, mask_decoder.*)"
DECODER_HEADS = 8  # segment-anything's TwoWayTransformer always has 8 heads; shapes do not reveal it
_IGNORED = {"pixel_mean", "pixel_std"}
_P = r"(weight|bias)"
_ATTN = (
    r"((?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
    r"\.(?:q|k|v|out)_proj\.(?:weight|bias))"
)
_RULES = [
    (r"image_encoder\.pos_embed", "vision_encoder.pos_embed"),
    (rf"image_encoder\.patch_embed\.proj\.{_P}", r"vision_encoder.patch_embed.projection.\1"),
    (rf"image_encoder\.blocks\.(\d+)\.norm([12])\.{_P}", r"vision_encoder.layers.\1.layer_norm\2.\3"),
    (
        r"image_encoder\.blocks\.(\d+)\.(attn\.(?:qkv\.weight|qkv\.bias|proj\.weight|proj\.bias|rel_pos_h|rel_pos_w)"
        r"|mlp\.lin[12]\.(?:weight|bias))",
        r"vision_encoder.layers.\1.\2",
    ),
    (r"image_encoder\.neck\.0\.weight", "vision_encoder.neck.conv1.weight"),
    (rf"image_encoder\.neck\.1\.{_P}", r"vision_encoder.neck.layer_norm1.\1"),
    (r"image_encoder\.neck\.2\.weight", "vision_encoder.neck.conv2.weight"),
    (rf"image_encoder\.neck\.3\.{_P}", r"vision_encoder.neck.layer_norm2.\1"),
    (r"prompt_encoder\.point_embeddings\.(\d+)\.weight", r"prompt_encoder.point_embed.\1.weight"),
    (r"prompt_encoder\.(not_a_point_embed|no_mask_embed)\.weight", r"prompt_encoder.\1.weight"),
    (rf"prompt_encoder\.mask_downscaling\.0\.{_P}", r"prompt_encoder.mask_embed.conv1.\1"),
    (rf"prompt_encoder\.mask_downscaling\.1\.{_P}", r"prompt_encoder.mask_embed.layer_norm1.\1"),
    (rf"prompt_encoder\.mask_downscaling\.3\.{_P}", r"prompt_encoder.mask_embed.conv2.\1"),
    (rf"prompt_encoder\.mask_downscaling\.4\.{_P}", r"prompt_encoder.mask_embed.layer_norm2.\1"),
    (rf"prompt_encoder\.mask_downscaling\.6\.{_P}", r"prompt_encoder.mask_embed.conv3.\1"),
    (
        rf"mask_decoder\.transformer\.layers\.(\d+)\.norm([1-4])\.{_P}",
        r"mask_decoder.transformer.layers.\1.layer_norm\2.\3",
    ),
    (rf"mask_decoder\.transformer\.layers\.(\d+)\.{_ATTN}", r"mask_decoder.transformer.layers.\1.\2"),
    (
        r"mask_decoder\.transformer\.layers\.(\d+)\.(mlp\.lin[12]\.(?:weight|bias))",
        r"mask_decoder.transformer.layers.\1.\2",
    ),
    (
        r"mask_decoder\.transformer\.(final_attn_token_to_image\.(?:q|k|v|out)_proj\.(?:weight|bias))",
        r"mask_decoder.transformer.\1",
    ),
    (
        rf"mask_decoder\.transformer\.norm_final_attn\.{_P}",
        r"mask_decoder.transformer.layer_norm_final_attn.\1",
    ),
    (r"mask_decoder\.(iou_token|mask_tokens)\.weight", r"mask_decoder.\1.weight"),
    (rf"mask_decoder\.output_upscaling\.0\.{_P}", r"mask_decoder.upscale_conv1.\1"),
    (rf"mask_decoder\.output_upscaling\.1\.{_P}", r"mask_decoder.upscale_layer_norm.\1"),
    (rf"mask_decoder\.output_upscaling\.3\.{_P}", r"mask_decoder.upscale_conv2.\1"),
]
_MLP = r"mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head)\.layers\.\d+\.(?:weight|bias)"


def _infer_config(state: StateDict, path: Path) -> SamConfig:
    """Architecture from tensor shapes (ViT width, depth, heads, window, global blocks; prompt, decoder)."""
    get = lambda key: require(state, key, path, EXPECTED)  # noqa: E731
    patch_weight = get("image_encoder.patch_embed.proj.weight")  # (width, 3, patch, patch)
    width, patch = patch_weight.shape[0], patch_weight.shape[-1]
    grid = get("image_encoder.pos_embed").shape[1]  # (1, grid, grid, width)
    depth = count_indexed(state, "image_encoder.blocks.")
    head_dim = get("image_encoder.blocks.0.attn.rel_pos_h").shape[1]  # (2 * size - 1, head_dim)
    # rel-pos tables span 2 * grid - 1 positions in global blocks and 2 * window - 1 in windowed ones
    spans = [(get(f"image_encoder.blocks.{i}.attn.rel_pos_h").shape[0] + 1) // 2 for i in range(depth)]
    windows = {s for s in spans if s != grid}
    if len(windows) > 1:
        raise CheckpointError(
            f"{path}: blocks use several window sizes {sorted(windows)}; expected {EXPECTED}"
        )
    dim = get("prompt_encoder.no_mask_embed.weight").shape[1]
    vision = {
        "hidden_size": width,
        "num_hidden_layers": depth,
        "num_attention_heads": width // head_dim,
        "mlp_dim": get("image_encoder.blocks.0.mlp.lin1.weight").shape[0],
        "global_attn_indexes": [i for i, s in enumerate(spans) if s == grid],
        "window_size": windows.pop() if windows else grid,
        "output_channels": get("image_encoder.neck.0.weight").shape[0],
        "image_size": grid * patch,
        "patch_size": patch,
        "num_pos_feats": get("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix").shape[1],
        "qkv_bias": "image_encoder.blocks.0.attn.qkv.bias" in state,
        "initializer_range": 0.02,
    }
    prompt = {
        "hidden_size": dim,
        "image_size": grid * patch,
        "patch_size": patch,
        "image_embedding_size": grid,
        "mask_input_channels": get("prompt_encoder.mask_downscaling.3.weight").shape[0],
        "num_point_embeddings": count_indexed(state, "prompt_encoder.point_embeddings."),
    }
    cross_dim = get("mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight").shape[0]
    decoder = {
        "hidden_size": dim,
        "mlp_dim": get("mask_decoder.transformer.layers.0.mlp.lin1.weight").shape[0],
        "num_hidden_layers": count_indexed(state, "mask_decoder.transformer.layers."),
        "num_attention_heads": DECODER_HEADS,
        "attention_downsample_rate": dim // cross_dim,
        "num_multimask_outputs": get("mask_decoder.mask_tokens.weight").shape[0] - 1,
        "iou_head_depth": count_indexed(state, "mask_decoder.iou_prediction_head.layers."),
        "iou_head_hidden_dim": get("mask_decoder.iou_prediction_head.layers.0.weight").shape[0],
    }
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def _convert(state: StateDict, path: Path) -> StateDict:
    out: StateDict = {}
    unknown = []
    for key, value in state.items():
        if key in _IGNORED:
            continue
        if key == "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix":
            out["shared_image_embedding.positional_embedding"] = value
            out["prompt_encoder.shared_embedding.positional_embedding"] = value
        elif (new := apply_rules(key, _RULES)) is not None:
            out[new] = value
        elif re.fullmatch(_MLP, key):
            stem = key.rsplit(".layers.", 1)[0]
            out[rename_mlp(key, count_indexed(state, f"{stem}.layers."))] = value
        else:
            unknown.append(key)
    reject_unknown(unknown, path, EXPECTED)
    return out


def load_original_sam(path: str | Path) -> SamModel:
    """Load a segment-anything ``.pth`` checkpoint as a ``transformers.SamModel`` (float32, eval mode).

    The ViT size (B, L, H or any other) is inferred from tensor shapes; the mask decoder has
    ``DECODER_HEADS`` heads as in segment-anything. Offline; errors are one-line ``CheckpointError``s.
    """
    path = Path(path)
    state = read_state_dict(path, EXPECTED)
    config = _infer_config(state, path)
    return build_and_load(SamModel, config, _convert(state, path), path, EXPECTED)
