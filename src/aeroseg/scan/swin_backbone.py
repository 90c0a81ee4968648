"""The Swin backbone: SCAN's ``D2SwinTransformer`` (``scan/modeling/backbone/swin.py``, Mask2Former's) as
``transformers``' ``SwinBackbone``.

Both pad every stage to whole windows, shift every second block by half a window with the same region mask,
merge patches in the same order and put one LayerNorm on each stage's output (detectron2's ``norm0..3``,
``hidden_states_norms`` here); ``SwinBackbone`` partitions windows at every resolution, as the official
(``always_partition``). The unused final LayerNorm of the inner ``SwinModel`` is removed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import SwinConfig
from transformers.models.swin.modeling_swin import SwinBackbone

from aeroseg.convert._checkpoint import read_state_dict, reject_unknown
from aeroseg.errors import CheckpointError
from aeroseg.scan.config import SCANConfig

STAGES = ["stage1", "stage2", "stage3", "stage4"]
EXPECTED = (
    "a Swin Transformer checkpoint (microsoft/Swin-Transformer layout: patch_embed, layers.N.blocks.M, ...)"
)


def swin_config(config: SCANConfig) -> SwinConfig:
    """The ``transformers`` config of the Swin that ``config`` describes (``MODEL.SWIN.*``)."""
    return SwinConfig(
        image_size=384,  # SWIN.PRETRAIN_IMG_SIZE: used by position embeddings only, which Swin-B has none of
        patch_size=config.swin_patch,
        embed_dim=config.swin_embed_dim,
        depths=list(config.swin_depths),
        num_heads=list(config.swin_heads),
        window_size=config.swin_window,
        mlp_ratio=config.swin_mlp_ratio,
        drop_path_rate=config.swin_drop_path,
        hidden_act="gelu",
        qkv_bias=True,
        use_absolute_embeddings=False,
        out_features=STAGES,
    )


class SwinFeatures(SwinBackbone):
    """``forward(x)``: x B×3×H×W (normalised) -> [res2, res3, res4, res5], B×C_i×H/s×W/s at strides 4..32."""

    def __init__(self, config: SwinConfig) -> None:
        super().__init__(config)
        self.swin.layernorm = nn.Identity()

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return list(super().forward(pixel_values).feature_maps)


def build_swin(config: SCANConfig, *, pretrained: bool) -> SwinFeatures:
    """The Swin of ``config``: random (``pretrained=False``), or with the weights of ``config.swin`` (a
    transformers directory or hub id, or Microsoft's ``.pth``); the stage norms start new, as detectron2's."""
    model = SwinFeatures._from_config(swin_config(config), attn_implementation="sdpa")
    if not pretrained:
        return model
    source = Path(config.swin).expanduser()
    if source.is_file():
        from aeroseg.convert.swin import convert_swin

        state = read_state_dict(source, EXPECTED)
        converted, unknown = convert_swin(state)
        reject_unknown(unknown, source, EXPECTED)
    else:
        from transformers.models.swin.modeling_swin import SwinModel

        try:
            hub = SwinModel.from_pretrained(config.swin, add_pooling_layer=False)
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"cannot load Swin {config.swin!r} ({type(error).__name__}); pass a transformers directory, a "
                "hub id or Microsoft's .pth file"
            ) from None
        _check_architecture(hub.config, config, config.swin)
        converted = {f"swin.{k}": v for k, v in hub.state_dict().items() if not k.startswith("layernorm.")}
    wanted = {k for k in model.state_dict() if not k.startswith("hidden_states_norms.")}
    missing = sorted(wanted - set(converted))
    extra = sorted(set(converted) - set(model.state_dict()))
    if missing or extra:
        raise CheckpointError(
            f"{config.swin}: does not fit the Swin of the config ({len(missing)} missing, {len(extra)} unexpected "
            f"tensors, e.g. {(missing or extra)[0]})"
        )
    wrong = next((k for k in converted if converted[k].shape != model.state_dict()[k].shape), None)
    if wrong is not None:
        raise CheckpointError(f"{config.swin}: tensor {wrong} has shape {tuple(converted[wrong].shape)}")
    model.load_state_dict({k: v.float() for k, v in converted.items()}, strict=False)
    return model


def _check_architecture(found: SwinConfig, config: SCANConfig, source: str) -> None:
    ours = (config.swin_embed_dim, tuple(config.swin_depths), tuple(config.swin_heads), config.swin_window)
    theirs = (found.embed_dim, tuple(found.depths), tuple(found.num_heads), found.window_size)
    if ours != theirs:
        raise CheckpointError(
            f"{source}: a Swin of (width, depths, heads, window) {theirs}, the config needs {ours}"
        )
