"""Backbone architecture configs shipped with the package (no hub access needed).

Each name maps to ``assets/arch/<name>.json``, the ``to_dict()`` of the ``transformers`` config of the hub
repository named below (generic defaults such as ``id2label`` left out):

- ``clip-vit-b-16``: openai/clip-vit-base-patch16 (CLIPConfig)
- ``clip-vit-l-14``: openai/clip-vit-large-patch14 (CLIPConfig)
- ``clip-vit-l-14-336``: openai/clip-vit-large-patch14-336 (CLIPConfig)
- ``sam-vit-b`` / ``sam-vit-l`` / ``sam-vit-h``: facebook/sam-vit-{base,large,huge} (SamConfig; vision
  ``initializer_range`` 0.02 instead of 1e-10, so that randomly initialised encoders are not constant)
- ``sam2-hiera-b+`` / ``sam2.1-hiera-b+``: facebook/sam2-hiera-base-plus, facebook/sam2.1-hiera-base-plus
  (Sam2Config; SAM2 and SAM2.1 share the image-model architecture, they differ in weights only)
- ``sam3``: facebook/sam3 (Sam3Config: transformers' defaults, which are that checkpoint's architecture)
"""

import json
from pathlib import Path

from transformers import CONFIG_MAPPING, PretrainedConfig

from aeroseg.errors import UserError

ARCH_DIR = Path(__file__).resolve().parent.parent / "assets" / "arch"

ARCHITECTURES: tuple[str, ...] = (
    "clip-vit-b-16",
    "clip-vit-l-14",
    "clip-vit-l-14-336",
    "sam-vit-b",
    "sam-vit-l",
    "sam-vit-h",
    "sam2-hiera-b+",
    "sam2.1-hiera-b+",
    "sam3",
)


def load_arch_config(name: str) -> PretrainedConfig:
    """Return the ``transformers`` config of the shipped architecture ``name`` (one of ``ARCHITECTURES``)."""
    if name not in ARCHITECTURES:
        raise UserError(f"unknown backbone architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}")
    config_dict = json.loads((ARCH_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return CONFIG_MAPPING[config_dict["model_type"]].from_dict(config_dict)
