"""OpenEarthMap (release without xBD) -> canonical layout, cut into 512×512 tiles.

Raw layout (``OpenEarthMap_wo_xBD`` as downloaded from Zenodo)::

    RAW/train.txt, RAW/val.txt                 # one file name per line, e.g. aachen_1.tif (test.txt unused)
    RAW/<region>/images/<name>.tif             # RGB GeoTIFF, 0.25-0.5 m, about 1,000 px a side
    RAW/<region>/labels/<name>.tif             # class values 0..8

Label values 1..8 are the classes of ``splits/openearthmap.yaml`` (value v -> id v-1); 0 (unknown) and
other values -> 255. The lists also name the xBD scenes, whose images this release leaves out: they are
skipped and counted.

Tiles: 512×512 windows every 512 px, the last one flush with the border (a 1,000-px scene gives 2×2
tiles overlapping by 24 px; scenes under 512 px are padded with ignore). 512 is chosen because it is the
window of the sliding-window inference protocol (evaluation sees the same context as training), it is
larger than the CLIP input (384) so random crops remain random, and it keeps most of a scene's context.
The paper's 31,154 train / 5,195 val images imply about 16 tiles per scene, i.e. tiles near 256 px; this
tiling gives about 4 per scene.
"""

from __future__ import annotations

import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from aeroseg.data.dataset import read_rgb
from aeroseg.data.info import DatasetInfo
from aeroseg.data.labels import values_to_ids
from aeroseg.data.writer import SPLITS, Source, Tiling
from aeroseg.errors import DatasetNotFoundError, UserError

TILING = Tiling(size=512, stride=512)
LAYOUT = (
    "expected the OpenEarthMap_wo_xBD layout RAW/{train,val}.txt and "
    "RAW/<region>/images/<name>.tif with RAW/<region>/labels/<name>.tif"
)


def _read_label(path: Path) -> np.ndarray:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(1)


def _load(
    image_path: Path, label_path: Path, raw_values: list[int], ignore: int
) -> tuple[np.ndarray, np.ndarray]:
    image = read_rgb(image_path)
    if image.dtype != np.uint8:
        raise UserError(f"{image_path}: expected 8-bit RGB, got {image.dtype}")
    return image, values_to_ids(_read_label(label_path), raw_values, ignore)


def _listed(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetNotFoundError(f"missing {path}; {LAYOUT}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [name if name.endswith(".tif") else f"{name}.tif" for name in names]


def find_sources(raw: Path, info: DatasetInfo, codes: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """One :class:`Source` per listed scene with an image; raises if the layout is not the official one."""
    lists = {split: _listed(raw / f"{split}.txt") for split in SPLITS}
    images = {p.name: p for p in raw.glob("*/images/*.tif")}
    if not images:
        raise DatasetNotFoundError(f"no <region>/images/*.tif under {raw}; {LAYOUT}")
    sources: list[Source] = []
    notes = []
    for split, names in lists.items():
        found = [name for name in names if name in images]
        if not found:
            raise DatasetNotFoundError(f"none of the images listed in {raw / f'{split}.txt'} exist; {LAYOUT}")
        if len(found) < len(names):
            notes.append(f"{split}: skipped {len(names) - len(found)} listed scenes without an image (xBD)")
        for name in found:
            image = images[name]
            label = image.parent.parent / "labels" / name
            if not label.is_file():
                raise DatasetNotFoundError(f"image {image} has no label: expected {label}; {LAYOUT}")
            load = partial(_load, image, label, codes["raw_values"], info.ignore_index)
            sources.append(Source(split, image.stem, load))
    return sources, notes
