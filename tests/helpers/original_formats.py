"""Tiny random checkpoints in the ORIGINAL key layouts of OpenAI CLIP / open_clip, segment-anything and SAM2.

Each state dict is written from scratch with the original module names and shapes (``openai/CLIP``
``model.py``, ``segment_anything/modeling``, ``sam2/modeling``), independently of aeroseg's converters. With
``device="meta"`` the same functions give shape-only state dicts of full-size models (no memory used).
"""

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

Maker = Callable[..., Tensor]


def _maker(seed: int, device: str) -> tuple[Maker, Maker]:
    """(weight, norm): random tensors, small for weights and near 1 for norm scales; empty on ``meta``."""
    gen = torch.Generator().manual_seed(seed)

    def weight(*shape: int) -> Tensor:
        if device == "meta":
            return torch.empty(shape, device="meta")
        return 0.1 * torch.randn(shape, generator=gen)

    def norm(*shape: int) -> Tensor:
        if device == "meta":
            return torch.empty(shape, device="meta")
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)

    return weight, norm


def _linear(sd: dict, prefix: str, weight: Maker, n_out: int, n_in: int) -> None:
    sd[f"{prefix}.weight"] = weight(n_out, n_in)
    sd[f"{prefix}.bias"] = weight(n_out)


def _layer_norm(sd: dict, prefix: str, weight: Maker, norm: Maker, dim: int) -> None:
    sd[f"{prefix}.weight"] = norm(dim)
    sd[f"{prefix}.bias"] = weight(dim)


def _mlp(sd: dict, prefix: str, weight: Maker, dims: list[int]) -> None:
    """segment-anything / SAM2 ``MLP``: ``layers.i`` linears through ``dims``."""
    for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        _linear(sd, f"{prefix}.layers.{i}", weight, n_out, n_in)


# ----------------------------------------------------------------------------------------------- CLIP
def openai_clip_state_dict(
    *,
    width: int = 64,
    layers: int = 2,
    patch: int = 8,
    image: int = 32,
    text_width: int = 64,
    text_layers: int = 2,
    context: int = 16,
    vocab: int = 100,
    embed: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Tensor]:
    """OpenAI CLIP vision + text transformer keys: ``CLIP.state_dict()`` of ``clip/model.py``."""
    weight, norm = _maker(seed, device)
    sd: dict[str, Tensor] = {}

    def resblocks(prefix: str, w: int, n: int) -> None:
        for i in range(n):
            b = f"{prefix}.resblocks.{i}"
            sd[f"{b}.attn.in_proj_weight"] = weight(3 * w, w)
            sd[f"{b}.attn.in_proj_bias"] = weight(3 * w)
            _linear(sd, f"{b}.attn.out_proj", weight, w, w)
            _layer_norm(sd, f"{b}.ln_1", weight, norm, w)
            _linear(sd, f"{b}.mlp.c_fc", weight, 4 * w, w)
            _linear(sd, f"{b}.mlp.c_proj", weight, w, 4 * w)
            _layer_norm(sd, f"{b}.ln_2", weight, norm, w)

    grid = image // patch
    sd["visual.class_embedding"] = weight(width)
    sd["visual.positional_embedding"] = weight(grid * grid + 1, width)
    sd["visual.proj"] = weight(width, embed)
    sd["visual.conv1.weight"] = weight(width, 3, patch, patch)
    _layer_norm(sd, "visual.ln_pre", weight, norm, width)
    resblocks("visual.transformer", width, layers)
    _layer_norm(sd, "visual.ln_post", weight, norm, width)
    sd["positional_embedding"] = weight(context, text_width)
    sd["text_projection"] = weight(text_width, embed)
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07), device=device)
    sd["token_embedding.weight"] = weight(vocab, text_width)
    resblocks("transformer", text_width, text_layers)
    _layer_norm(sd, "ln_final", weight, norm, text_width)
    return sd


class _Holder(nn.Module):
    """A node of a module tree that only holds tensors; scriptable, so its state dict keeps our key names."""

    def __init__(self, tensors: dict[str, Tensor]):
        super().__init__()
        children: dict[str, dict[str, Tensor]] = {}
        for key, value in tensors.items():
            head, _, rest = key.partition(".")
            if rest:
                children.setdefault(head, {})[rest] = value
            elif value.is_floating_point() and value.dim() > 0:
                self.register_parameter(head, nn.Parameter(value, requires_grad=False))
            else:
                self.register_buffer(head, value)
        for name, sub in children.items():
            self.add_module(name, _Holder(sub))

    def forward(self, x: Tensor) -> Tensor:
        return x


def save_openai_torchscript(state: dict[str, Tensor], path: Path, *, image: int, context: int) -> None:
    """A TorchScript archive like OpenAI's released ``ViT-*.pt``: fp16 weights plus the scalar tensors
    ``input_resolution``, ``context_length`` and ``vocab_size``."""
    tensors = {k: v.half() if v.is_floating_point() and v.dim() > 0 else v for k, v in state.items()}
    tensors["input_resolution"] = torch.tensor(image)
    tensors["context_length"] = torch.tensor(context)
    tensors["vocab_size"] = torch.tensor(state["token_embedding.weight"].shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, OpenAI's files are not
        torch.jit.script(_Holder(tensors)).save(str(path))


def save_open_clip_training(state: dict[str, Tensor], path: Path) -> None:
    """open_clip's training checkpoint: ``{"epoch", "name", "state_dict"}`` with DDP's ``module.`` prefix."""
    torch.save({"epoch": 3, "name": "tiny", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)


def save_safetensors(state: dict[str, Tensor], path: Path) -> None:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


# ------------------------------------------------------------------------------------------------ SAM
def _prompt_encoder(sd: dict, prefix: str, weight: Maker, norm: Maker, dim: int, mask_chans: int) -> None:
    """segment-anything ``PromptEncoder`` (SAM2 reuses it unchanged)."""
    sd[f"{prefix}.pe_layer.positional_encoding_gaussian_matrix"] = weight(2, dim // 2)
    for i in range(4):
        sd[f"{prefix}.point_embeddings.{i}.weight"] = weight(1, dim)
    sd[f"{prefix}.not_a_point_embed.weight"] = weight(1, dim)
    md = f"{prefix}.mask_downscaling"
    sd[f"{md}.0.weight"], sd[f"{md}.0.bias"] = weight(mask_chans // 4, 1, 2, 2), weight(mask_chans // 4)
    _layer_norm(sd, f"{md}.1", weight, norm, mask_chans // 4)
    sd[f"{md}.3.weight"], sd[f"{md}.3.bias"] = weight(mask_chans, mask_chans // 4, 2, 2), weight(mask_chans)
    _layer_norm(sd, f"{md}.4", weight, norm, mask_chans)
    sd[f"{md}.6.weight"], sd[f"{md}.6.bias"] = weight(dim, mask_chans, 1, 1), weight(dim)
    sd[f"{prefix}.no_mask_embed.weight"] = weight(1, dim)


def _mask_decoder(
    sd: dict, prefix: str, weight: Maker, norm: Maker, dim: int, mlp_dim: int, iou_hidden: int, *, sam2: bool
) -> None:
    """segment-anything ``MaskDecoder`` + ``TwoWayTransformer`` (``sam2=True``: SAM2's variant, whose
    transformer MLP is ``mlp.layers.{0,1}`` and which adds high-res convs and an object-score head)."""

    def attention(p: str, inner: int) -> None:
        for name in ("q_proj", "k_proj", "v_proj"):
            _linear(sd, f"{p}.{name}", weight, inner, dim)
        _linear(sd, f"{p}.out_proj", weight, dim, inner)

    t = f"{prefix}.transformer"
    for i in range(2):
        b = f"{t}.layers.{i}"
        attention(f"{b}.self_attn", dim)
        _layer_norm(sd, f"{b}.norm1", weight, norm, dim)
        attention(f"{b}.cross_attn_token_to_image", dim // 2)
        _layer_norm(sd, f"{b}.norm2", weight, norm, dim)
        if sam2:
            _mlp(sd, f"{b}.mlp", weight, [dim, mlp_dim, dim])
        else:
            _linear(sd, f"{b}.mlp.lin1", weight, mlp_dim, dim)
            _linear(sd, f"{b}.mlp.lin2", weight, dim, mlp_dim)
        _layer_norm(sd, f"{b}.norm3", weight, norm, dim)
        _layer_norm(sd, f"{b}.norm4", weight, norm, dim)
        attention(f"{b}.cross_attn_image_to_token", dim // 2)
    attention(f"{t}.final_attn_token_to_image", dim // 2)
    _layer_norm(sd, f"{t}.norm_final_attn", weight, norm, dim)
    sd[f"{prefix}.iou_token.weight"] = weight(1, dim)
    sd[f"{prefix}.mask_tokens.weight"] = weight(4, dim)
    if sam2:
        sd[f"{prefix}.obj_score_token.weight"] = weight(1, dim)
    up = f"{prefix}.output_upscaling"
    sd[f"{up}.0.weight"], sd[f"{up}.0.bias"] = weight(dim, dim // 4, 2, 2), weight(dim // 4)
    _layer_norm(sd, f"{up}.1", weight, norm, dim // 4)
    sd[f"{up}.3.weight"], sd[f"{up}.3.bias"] = weight(dim // 4, dim // 8, 2, 2), weight(dim // 8)
    if sam2:
        sd[f"{prefix}.conv_s0.weight"], sd[f"{prefix}.conv_s0.bias"] = (
            weight(dim // 8, dim, 1, 1),
            weight(dim // 8),
        )
        sd[f"{prefix}.conv_s1.weight"], sd[f"{prefix}.conv_s1.bias"] = (
            weight(dim // 4, dim, 1, 1),
            weight(dim // 4),
        )
    for i in range(4):
        _mlp(sd, f"{prefix}.output_hypernetworks_mlps.{i}", weight, [dim, dim, dim, dim // 8])
    _mlp(sd, f"{prefix}.iou_prediction_head", weight, [dim, iou_hidden, iou_hidden, 4])
    if sam2:
        _mlp(sd, f"{prefix}.pred_obj_score_head", weight, [dim, dim, dim, 1])


def segment_anything_state_dict(
    *,
    width: int = 32,
    depth: int = 3,
    heads: int = 2,
    window: int = 3,
    global_attn: tuple[int, ...] = (1,),
    image: int = 64,
    patch: int = 8,
    dim: int = 16,
    mask_chans: int = 8,
    decoder_mlp: int = 32,
    iou_hidden: int = 16,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Tensor]:
    """``Sam.state_dict()`` of segment-anything (``image_encoder`` ViT with windowed / global attention,
    ``prompt_encoder``, ``mask_decoder``, and the ``pixel_mean`` / ``pixel_std`` buffers)."""
    weight, norm = _maker(seed, device)
    sd: dict[str, Tensor] = {}
    grid, head_dim = image // patch, width // heads
    e = "image_encoder"
    sd[f"{e}.pos_embed"] = weight(1, grid, grid, width)
    sd[f"{e}.patch_embed.proj.weight"], sd[f"{e}.patch_embed.proj.bias"] = (
        weight(width, 3, patch, patch),
        weight(width),
    )
    for i in range(depth):
        b, size = f"{e}.blocks.{i}", grid if i in global_attn else window
        _layer_norm(sd, f"{b}.norm1", weight, norm, width)
        _linear(sd, f"{b}.attn.qkv", weight, 3 * width, width)
        _linear(sd, f"{b}.attn.proj", weight, width, width)
        sd[f"{b}.attn.rel_pos_h"] = weight(2 * size - 1, head_dim)
        sd[f"{b}.attn.rel_pos_w"] = weight(2 * size - 1, head_dim)
        _layer_norm(sd, f"{b}.norm2", weight, norm, width)
        _linear(sd, f"{b}.mlp.lin1", weight, 4 * width, width)
        _linear(sd, f"{b}.mlp.lin2", weight, width, 4 * width)
    sd[f"{e}.neck.0.weight"] = weight(dim, width, 1, 1)
    _layer_norm(sd, f"{e}.neck.1", weight, norm, dim)
    sd[f"{e}.neck.2.weight"] = weight(dim, dim, 3, 3)
    _layer_norm(sd, f"{e}.neck.3", weight, norm, dim)
    _prompt_encoder(sd, "prompt_encoder", weight, norm, dim, mask_chans)
    _mask_decoder(sd, "mask_decoder", weight, norm, dim, decoder_mlp, iou_hidden, sam2=False)
    sd["pixel_mean"] = torch.tensor([123.675, 116.28, 103.53], device=device).view(-1, 1, 1)
    sd["pixel_std"] = torch.tensor([58.395, 57.12, 57.375], device=device).view(-1, 1, 1)
    return sd


# ----------------------------------------------------------------------------------------------- SAM2
SAM2_VIDEO_KEYS = (
    "memory_attention.layers.0.self_attn.q_proj.weight",
    "memory_encoder.mask_downsampler.encoder.0.weight",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "obj_ptr_proj.layers.0.weight",
    "obj_ptr_tpos_proj.weight",
    "mask_downsample.weight",
    "no_obj_embed_spatial",
)


def sam2_checkpoint(
    *,
    embed_dim: int = 8,
    stages: tuple[int, ...] = (1, 2, 3, 1),
    first_window: int = 4,
    bkg: tuple[int, int] = (3, 3),
    dim: int = 16,
    mlp_dim: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, dict[str, Tensor]]:
    """A SAM2 / SAM2.1 ``.pt`` file's content: ``{"model": SAM2Base.state_dict()}`` with the Hiera trunk
    (``image_encoder.trunk``, dims doubling at each stage), FPN neck, prompt encoder, mask decoder, and a few
    tensors of the video memory modules (``SAM2_VIDEO_KEYS``, shapes arbitrary)."""
    weight, norm = _maker(seed, device)
    sd: dict[str, Tensor] = {}
    t = "image_encoder.trunk"
    sd[f"{t}.pos_embed"] = weight(1, embed_dim, *bkg)
    sd[f"{t}.pos_embed_window"] = weight(1, embed_dim, first_window, first_window)
    sd[f"{t}.patch_embed.proj.weight"], sd[f"{t}.patch_embed.proj.bias"] = (
        weight(embed_dim, 3, 7, 7),
        weight(embed_dim),
    )
    dims = [embed_dim * 2**s for s in range(len(stages))]
    block, d_in = 0, embed_dim
    for stage, n in enumerate(stages):
        for _ in range(n):
            b, d_out = f"{t}.blocks.{block}", dims[stage]
            _layer_norm(sd, f"{b}.norm1", weight, norm, d_in)
            _linear(sd, f"{b}.attn.qkv", weight, 3 * d_out, d_in)
            _linear(sd, f"{b}.attn.proj", weight, d_out, d_out)
            _layer_norm(sd, f"{b}.norm2", weight, norm, d_out)
            _mlp(sd, f"{b}.mlp", weight, [d_out, 4 * d_out, d_out])
            if d_in != d_out:
                _linear(sd, f"{b}.proj", weight, d_out, d_in)
            block, d_in = block + 1, d_out
    for i, channels in enumerate(reversed(dims)):
        sd[f"image_encoder.neck.convs.{i}.conv.weight"] = weight(dim, channels, 1, 1)
        sd[f"image_encoder.neck.convs.{i}.conv.bias"] = weight(dim)
    _prompt_encoder(sd, "sam_prompt_encoder", weight, norm, dim, 16)
    _mask_decoder(sd, "sam_mask_decoder", weight, norm, dim, mlp_dim, dim, sam2=True)
    sd["no_mem_embed"] = weight(1, 1, dim)
    for key in SAM2_VIDEO_KEYS:
        sd[key] = weight(1, 4)
    return {"model": sd}
