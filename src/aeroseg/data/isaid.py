"""iSAID -> canonical layout: DOTA-v1.0 scenes and iSAID semantic masks cut into 896×896 patches.

Raw layout (the official downloads, archives unzipped where they lie; sub-folders are searched)::

    RAW/train/images/**/P0000.png                                   # DOTA-v1.0 images (part1..3.zip)
    RAW/train/Semantic_masks/**/P0000_instance_color_RGB.png        # iSAID semantic masks (images.zip)
    RAW/val/...                                                     # same for val; test/ is not used

The iSAID devkit's layout, masks beside the images in ``RAW/<split>/images/``, works too.

Processing: colours -> ids with the palette of ``splits/isaid.yaml`` (OVRS class order, background and
unknown colours -> 255); then mmsegmentation's iSAID patching (``tools/dataset_converters/isaid.py``):
896×896 windows every 512 px, the last row/column of windows shifted back to end at the border, scenes
smaller than 896 padded (image 0, mask 255). Patches are named ``P0000_<y0>_<y1>_<x0>_<x1>``.
Patches whose mask is all 255 (pure background) are dropped unless ``--keep-empty``: with background
ignored they hold no scored pixel, so they change neither the loss nor the confusion matrix.

Counts: mmsegmentation documents 33,978 train / 11,644 val patches for this windowing (all patches kept).
The paper's 18,076 / 6,363 come from the processed release of its reference [42] (the iSAID-5i benchmark
of Yao et al., distributed as files, not as a script), which cannot be regenerated exactly from the
official downloads. Dropping background-only patches moves the counts from mmsegmentation's towards the
paper's; docs/datasets.md records what a run produced.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aeroseg.data.info import DatasetInfo
from aeroseg.data.labels import colors_to_ids
from aeroseg.data.writer import SPLITS, Source, Tiling
from aeroseg.errors import DatasetNotFoundError

TILING = Tiling(size=896, stride=512)
MASK_SUFFIX = "_instance_color_RGB.png"
_IMAGE_NAME = re.compile(r"^P\d+\.png$")
LAYOUT = (
    "expected the official iSAID layout RAW/{train,val}/images/P0000.png (DOTA-v1.0 images) and "
    "RAW/{train,val}/Semantic_masks/images/P0000_instance_color_RGB.png (iSAID masks), archives unzipped"
)


def _read_scene(path: Path) -> np.ndarray:
    """An RGB PNG as H×W×3 uint8; DOTA scenes reach 20,000 px a side, beyond PIL's default pixel limit."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the official downloads are trusted input
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _load(
    image_path: Path, mask_path: Path, colors: list, ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    return _read_scene(image_path), colors_to_ids(_read_scene(mask_path), colors, ignore_index)


def _missing(what: str, folder: Path) -> DatasetNotFoundError:
    archives = sorted(p.name for p in folder.rglob("*.zip")) if folder.is_dir() else []
    hint = f" (found {', '.join(archives)}: unzip them in place)" if archives else ""
    return DatasetNotFoundError(f"no {what} under {folder}{hint}; {LAYOUT}")


def find_sources(raw: Path, info: DatasetInfo, codes: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """One :class:`Source` per scene of train and val; raises if the layout is not the official one."""
    sources: list[Source] = []
    for split in SPLITS:
        folder = raw / split
        if not folder.is_dir():
            raise DatasetNotFoundError(f"missing folder {folder}; {LAYOUT}")
        images = {p.stem: p for p in folder.rglob("*.png") if _IMAGE_NAME.match(p.name)}
        masks = {p.name[: -len(MASK_SUFFIX)]: p for p in folder.rglob(f"*{MASK_SUFFIX}")}
        if not images:
            raise _missing("DOTA images P*.png", folder)
        if not masks:
            raise _missing(f"iSAID masks P*{MASK_SUFFIX}", folder)
        for stem in sorted(set(images) ^ set(masks)):
            if stem in images:
                raise DatasetNotFoundError(
                    f"image {images[stem]} has no mask {stem}{MASK_SUFFIX} under {folder}"
                )
            raise DatasetNotFoundError(
                f"mask {masks[stem]} has no image {stem}.png under {folder}: "
                "extract every part of the DOTA images"
            )
        for stem in sorted(images):
            load = partial(_load, images[stem], masks[stem], codes["colors"], info.ignore_index)
            sources.append(Source(split, stem, load))
    return sources, []
