"""DLRSD -> canonical layout: UC Merced scenes with the DLRSD dense labels, one output per scene.

Raw layout (the two official downloads side by side)::

    RAW/UCMerced_LandUse/Images/<scene class>/<name>.tif   # e.g. airplane/airplane00.tif, 256×256 RGB
    RAW/DLRSD/Images/<scene class>/<name>.png              # labels: 8-bit palette PNGs, values 1..17

Label values 1..17 are the classes of ``splits/dlrsd.yaml`` in alphabetical order (value v -> id v-1);
any other value -> 255. Labels saved as RGB are decoded with the DLRSD colour map of the same file.
Images are written as PNG (lossless); no tiling.

Split: DLRSD has no official train/val split, and the one of the OVRS/AerOSeg line of work (5,601 /
1,401 of 7,002 images in the paper) exists only as a processed download. This module uses a documented
deterministic split instead: within each of the 21 scene classes, images in natural name order, the last
fifth (``n // 5``) is val and the rest train -> 1,680 train / 420 val of the 2,100 images.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aeroseg.data.dataset import read_rgb
from aeroseg.data.info import DatasetInfo
from aeroseg.data.labels import colors_to_ids, values_to_ids
from aeroseg.data.writer import Source
from aeroseg.errors import DatasetNotFoundError, UserError

TILING = None  # the 256×256 scenes are used whole
VAL_FRACTION = 5  # the last 1/5 of each scene class is val
LAYOUT = (
    "expected RAW/UCMerced_LandUse/Images/<class>/<name>.tif (UC Merced) and "
    "RAW/DLRSD/Images/<class>/<name>.png (DLRSD labels)"
)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _load(
    image_path: Path, label_path: Path, codes: dict[str, Any], ignore: int
) -> tuple[np.ndarray, np.ndarray]:
    image = read_rgb(image_path)
    if image.dtype != np.uint8:
        raise UserError(f"{image_path}: expected 8-bit RGB, got {image.dtype}")
    with Image.open(label_path) as label:
        if label.mode in ("P", "L"):
            ids = values_to_ids(np.asarray(label), codes["raw_values"], ignore)
        elif label.mode in ("RGB", "RGBA"):
            ids = colors_to_ids(np.asarray(label.convert("RGB")), codes["colors"], ignore)
        else:
            raise UserError(f"label {label_path} is a {label.mode} image; expected a palette or RGB PNG")
    return image, ids


def find_sources(raw: Path, info: DatasetInfo, codes: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """One :class:`Source` per UC Merced scene; raises if the layout is not the official one."""
    image_root, label_root = raw / "UCMerced_LandUse" / "Images", raw / "DLRSD" / "Images"
    for folder in (image_root, label_root):
        if not folder.is_dir():
            raise DatasetNotFoundError(f"missing folder {folder}; {LAYOUT}")
    scene_classes = sorted(p.name for p in image_root.iterdir() if p.is_dir())
    if not scene_classes:
        raise DatasetNotFoundError(f"no scene-class folders in {image_root}; {LAYOUT}")
    sources: list[Source] = []
    for scene in scene_classes:
        images = sorted((image_root / scene).glob("*.tif"), key=lambda p: _natural_key(p.stem))
        if not images:
            raise DatasetNotFoundError(f"no .tif images in {image_root / scene}; {LAYOUT}")
        n_val = len(images) // VAL_FRACTION
        for index, image in enumerate(images):
            label = label_root / scene / f"{image.stem}.png"
            if not label.is_file():
                raise DatasetNotFoundError(f"image {image} has no label: expected {label}; {LAYOUT}")
            split = "val" if index >= len(images) - n_val else "train"
            sources.append(Source(split, image.stem, partial(_load, image, label, codes, info.ignore_index)))
    return sources, []
