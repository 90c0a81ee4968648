"""OVRS's processed iSAID and DLRSD (the archive linked from caoql98/OVRS's README) -> canonical layout.

The paper trained and evaluated on these releases (iSAID 18,076 train / 6,363 val patches, after the iSAID-5i
benchmark of Yao et al. that OVRS follows; DLRSD 5,601 / 1,401 of 7,002 images). They exist only as files,
so ``aeroseg prepare isaid|dlrsd`` recognises their layout as well as the official downloads. Layout, from
OVRS's ``cat_seg/data/datasets/register_iSAID.py`` and ``register_DLRSD.py`` (root ``OVS_datasets``)::

    RAW/iSAID_split/{train,val}/imgs/<stem>.png      RAW/iSAID_split/{train,val}/D2masks/<stem>.png
    RAW/DLRSD_split/{train,val}/imgs/<stem>.jpg      RAW/DLRSD_split/{train,val}/D2masks/<stem>.png
    RAW/iSAID/{imgs,D2masks}, RAW/DLRSD/{...}        # the "_all" sets OVRS's eval.sh scores; not read here

``RAW`` may also be the folder that holds ``OVS_datasets``. The masks ("D2masks", detectron2 semantic
segmentation) hold class ids in the order of the register files, which is the order of ``splits/isaid.yaml``
and ``splits/dlrsd.yaml``, and 255 for background / unlabelled. Images and masks are copied as they are (JPEG
decoded and written as PNG); every image is kept, also those whose mask is all 255, because the release is the
dataset. A mask value that is neither a class id nor 255 is refused, naming the file and the value.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from aeroseg.data.dataset import IMAGE_SUFFIXES, check_mask_ids, read_rgb
from aeroseg.data.info import DatasetInfo
from aeroseg.data.writer import SPLITS, Source
from aeroseg.errors import DatasetNotFoundError, UserError

FOLDERS = {"isaid": "iSAID_split", "dlrsd": "DLRSD_split"}  # OVRS register_*.py
PAPER_COUNTS = {"isaid": (18_076, 6_363), "dlrsd": (5_601, 1_401), "openearthmap": (31_154, 5_195)}
"""Train / val images of the paper's datasets (Sec. 4.1), printed beside what ``prepare`` produced."""


def find_root(raw: Path, dataset: str) -> Path | None:
    """The folder holding ``<FOLDERS[dataset]>/``: ``raw`` itself or ``raw/OVS_datasets``; None if neither."""
    if dataset not in FOLDERS:
        return None
    for root in (raw, raw / "OVS_datasets"):
        if (root / FOLDERS[dataset]).is_dir():
            return root
    return None


def _load(image_path: Path, mask_path: Path, info: DatasetInfo) -> tuple[np.ndarray, np.ndarray]:
    image = read_rgb(image_path)
    if image.dtype != np.uint8:
        raise UserError(f"{image_path}: expected 8-bit RGB, got {image.dtype}")
    with Image.open(mask_path) as png:
        if png.mode not in ("L", "P"):
            raise UserError(f"mask {mask_path} is a {png.mode} image; OVRS's D2masks are one channel of ids")
        mask = np.asarray(png).astype(np.uint8)
    check_mask_ids(mask, len(info.classes), info.ignore_index, mask_path)
    return image, mask


def find_sources(root: Path, dataset: str, info: DatasetInfo) -> list[Source]:
    """One :class:`Source` per image of ``root/<FOLDERS[dataset]>/{train,val}``; raises on a broken layout."""
    sources: list[Source] = []
    for split in SPLITS:
        images_dir = root / FOLDERS[dataset] / split / "imgs"
        masks_dir = root / FOLDERS[dataset] / split / "D2masks"
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise DatasetNotFoundError(
                    f"missing folder {folder}: OVRS's layout has {FOLDERS[dataset]}/{{train,val}}/{{imgs,D2masks}}"
                )
        images = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        if not images:
            raise DatasetNotFoundError(f"no images in {images_dir}")
        for stem in sorted(images):
            mask = masks_dir / f"{stem}.png"
            if not mask.is_file():
                raise DatasetNotFoundError(f"image {images[stem]} has no mask: expected {mask}")
            sources.append(Source(split, stem, partial(_load, images[stem], mask, info)))
    return sources


def count_report(dataset: str, counts: dict[str, int]) -> str:
    """One line comparing the prepared train / val counts with the paper's."""
    paper = PAPER_COUNTS[dataset]
    ours = (counts["train"], counts["val"])
    verdict = "the paper's" if ours == paper else f"the paper has {paper[0]:,} / {paper[1]:,}"
    return f"counts: {ours[0]:,} train / {ours[1]:,} val images ({verdict})"
