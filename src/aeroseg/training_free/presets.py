"""The training-free presets by name, with the weight sources each one takes (CLI flags ``--clip``,
``--guidance``, ``--simfeatup``, ``--sam3``): what ``aeroseg predict / evaluate / demo --preset`` build."""

from __future__ import annotations

from typing import Any

from torch import nn

from aeroseg.errors import UserError

TRAINING_FREE_PRESETS: dict[str, tuple[str, ...]] = {
    "training-free": ("clip", "guidance"),  # our CLIP + SAM variant of the SegEarth-OV family
    "segearth-ov": ("clip", "simfeatup"),  # SegEarth-OV as published
    "segearth-ov3": ("sam3",),  # SegEarth-OV3 on SAM 3
}


def build_training_free_preset(
    preset: str, pretrained: bool = True, overrides: dict[str, Any] | None = None, **weights: str | None
) -> nn.Module:
    """The model of a training-free preset; ``weights`` (None = the preset's public default) must be ones
    it takes; ``overrides``: fields of its config. Raises :class:`UserError` naming what does not apply."""
    if preset not in TRAINING_FREE_PRESETS:
        raise UserError(
            f"unknown training-free preset {preset!r}; choose one of: {', '.join(TRAINING_FREE_PRESETS)}"
        )
    given: dict[str, Any] = {k: v for k, v in weights.items() if v is not None}
    overrides = dict(overrides or {})
    wrong = sorted(set(given) - set(TRAINING_FREE_PRESETS[preset]))
    if wrong:
        takes = ", ".join(f"--{k}" for k in TRAINING_FREE_PRESETS[preset])
        raise UserError(f"--{wrong[0]} does not apply to --preset {preset}; it takes {takes}")
    if preset == "training-free":
        from aeroseg.training_free.config import DEFAULT_CLIP, DEFAULT_GUIDANCE
        from aeroseg.training_free.model import build_training_free

        return build_training_free(
            clip=given.get("clip", DEFAULT_CLIP),
            guidance=given.get("guidance", DEFAULT_GUIDANCE),
            pretrained=pretrained,
        )
    if given.get("simfeatup", "").lower() == "none":
        given["simfeatup"] = None
    if preset == "segearth-ov":
        from aeroseg.training_free.segearth_ov import SegEarthOV, SegEarthOVConfig

        model_cls, config_cls = SegEarthOV, SegEarthOVConfig
    else:
        from aeroseg.training_free.segearth_ov3 import SegEarthOV3, SegEarthOV3Config

        model_cls, config_cls = SegEarthOV3, SegEarthOV3Config
    try:
        config = config_cls().replace(**overrides, **given)
    except (TypeError, ValueError) as error:
        raise UserError(f"preset {preset!r}: {error}") from None
    return model_cls.from_config(config, pretrained=pretrained)


def preset_file_overrides(path: str, preset: str) -> dict[str, Any]:
    """The ``model:`` overrides of a per-dataset file (``configs/<dataset>/training-free/<preset>.yaml``),
    checked to be written for ``preset``."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            document = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"cannot read --config {path} ({type(error).__name__}); pass a YAML file") from None
    if not isinstance(document, dict) or document.get("preset") != preset:
        raise UserError(f"--config {path} is not a {preset} file (its preset: is {document.get('preset')!r})")
    return dict(document.get("model") or {})
