"""Write a tiny fake of OVRS's processed datasets archive (iSAID and DLRSD) in its layout.

    python tests/data/make_fake_ovrs.py OUTDIR     # -> OUTDIR/OVS_datasets/... and OUTDIR/OVS_datasets.zip

The layout and class-id order are those of caoql98/OVRS ``cat_seg/data/datasets/register_iSAID.py`` and
``register_DLRSD.py``: ``<name>_split/{train,val}/{imgs,D2masks}`` (iSAID images PNG, DLRSD images JPEG,
masks one-channel PNGs of class ids with 255 = background) beside the ``<name>/{imgs,D2masks}`` "all" sets.
Every mask is listed in :data:`MASKS`, so a test can check the ids that land in the canonical layout.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32  # px (the real patches are 256)
# dataset -> split -> [(stem, top-half id, bottom-half id)]; 255 = background
MASKS = {
    "isaid": {
        "train": [
            ("P0000_0_256_0_256", 0, 255),
            ("P0000_0_256_256_512", 13, 1),
            ("P0001_0_256_0_256", 255, 255),
        ],
        "val": [("P0002_0_256_0_256", 3, 14), ("P0003_256_512_0_256", 8, 255)],
    },
    "dlrsd": {
        "train": [("airplane00", 0, 16), ("harbor00", 6, 13), ("harbor01", 6, 12), ("beach00", 11, 12)],
        "val": [("airplane01", 0, 10), ("buildings00", 2, 255)],
    },
}
FOLDERS = {"isaid": ("iSAID_split", "iSAID", ".png"), "dlrsd": ("DLRSD_split", "DLRSD", ".jpg")}


def image(index: int) -> np.ndarray:
    """A smooth SIZE×SIZE×3 uint8 image (smooth so that JPEG keeps it close)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([4 * x + index, 4 * y, (2 * (x + y) + 40 * index) % 256], axis=-1).astype(np.uint8)


def mask(top: int, bottom: int) -> np.ndarray:
    out = np.full((SIZE, SIZE), top, dtype=np.uint8)
    out[SIZE // 2 :] = bottom
    return out


def make_ovrs(out: Path) -> Path:
    """Write OUT/OVS_datasets (both datasets) and OUT/OVS_datasets.zip; return OUT/OVS_datasets."""
    root = Path(out) / "OVS_datasets"
    for dataset, splits in MASKS.items():
        split_folder, all_folder, suffix = FOLDERS[dataset]
        for split, entries in splits.items():
            for folder in (root / split_folder / split, root / all_folder):
                (folder / "imgs").mkdir(parents=True, exist_ok=True)
                (folder / "D2masks").mkdir(parents=True, exist_ok=True)
                for index, (stem, top, bottom) in enumerate(entries):
                    Image.fromarray(image(index)).save(folder / "imgs" / f"{stem}{suffix}", quality=95)
                    Image.fromarray(mask(top, bottom)).save(folder / "D2masks" / f"{stem}.png")
    shutil.make_archive(str(Path(out) / "OVS_datasets"), "zip", root_dir=out, base_dir="OVS_datasets")
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_fake_ovrs.py OUTDIR")
    print(make_ovrs(Path(sys.argv[1])))
