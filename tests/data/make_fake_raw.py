"""Write tiny fake raw downloads of iSAID, DLRSD and OpenEarthMap in their official layouts.

    python tests/data/make_fake_raw.py OUTDIR     # -> OUTDIR/isaid, OUTDIR/dlrsd, OUTDIR/openearthmap

The files use the official names, formats and label codes (iSAID colour masks, DLRSD palette PNGs with
values 1..17 beside UC Merced TIFFs, OpenEarthMap GeoTIFFs with values 0..8 and the train/val lists).
Labelled boxes are listed in the module constants so that tests can check where each label lands.
Image pixels follow :func:`texture`, so a test can check that a tile holds the right part of a scene.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

# iSAID: scene -> (split, height, width, [(RGB colour, (y0, y1, x0, x1))]); colours of the iSAID palette.
SHIP, PLANE, HARBOR, SMALL_VEHICLE = (0, 0, 63), (0, 127, 255), (0, 100, 155), (0, 0, 127)
OFF_PALETTE = (1, 2, 3)  # e.g. an anti-aliased edge: no class
ISAID_SCENES = {
    "P0000": (
        "train",
        896,
        1200,
        [(SHIP, (100, 200, 100, 200)), (PLANE, (300, 400, 1000, 1100)), (OFF_PALETTE, (500, 550, 500, 550))],
    ),
    "P0001": ("train", 480, 640, [(HARBOR, (50, 100, 50, 150))]),  # smaller than a patch: padded
    "P0002": ("train", 200, 300, []),  # background only: no scored pixel
    "P0003": ("val", 896, 896, [(SMALL_VEHICLE, (10, 20, 30, 40))]),
}

# DLRSD: scene class -> label values (1..17, alphabetical classes) of the top and bottom halves.
DLRSD_SCENES = {"airplane": (1, 17), "harbor": (7, 14)}  # airplane/water, dock/ship
DLRSD_PER_CLASS = 5  # images per scene class (the real dataset has 100)
DLRSD_SIZE = 64  # px (the real scenes are 256)
DLRSD_PALETTE = [  # value -> RGB of the DLRSD colour map (value 0 unused)
    (0, 0, 0),
    (166, 202, 240),
    (128, 128, 0),
    (0, 0, 128),
    (255, 0, 0),
    (0, 128, 0),
    (128, 0, 0),
    (255, 233, 233),
    (160, 160, 164),
    (0, 128, 128),
    (90, 87, 255),
    (255, 255, 0),
    (255, 192, 0),
    (0, 0, 255),
    (255, 0, 192),
    (128, 0, 128),
    (0, 255, 0),
    (0, 255, 255),
]

# OpenEarthMap: file -> (list, height, width, background value, [(value, (y0, y1, x0, x1))]); values 0..8.
OEM_SCENES = {
    "aachen_1.tif": (
        "train",
        1000,
        1000,
        2,
        [(8, (100, 200, 100, 200)), (1, (600, 700, 600, 700)), (0, (0, 50, 900, 1000))],
    ),
    "aachen_2.tif": ("train", 300, 400, 4, [(0, (0, 10, 0, 10))]),  # smaller than a tile: padded
    "aachen_3.tif": ("val", 512, 600, 6, []),
    "aachen_4.tif": ("test", 256, 256, 0, []),  # test scenes have no labels
    "palu_1.tif": ("train", 256, 256, 3, []),  # an xBD scene: label but no image in OpenEarthMap_wo_xBD
}


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """H×W×3 uint8 image whose pixel (y, x) is (x + seed, y, x + y) mod 256."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x + seed) % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def make_isaid(root: Path) -> Path:
    """RAW/<split>/images/P*.png and RAW/<split>/Semantic_masks/images/P*_instance_color_RGB.png."""
    for index, (stem, (split, height, width, boxes)) in enumerate(ISAID_SCENES.items()):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "Semantic_masks" / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(texture(height, width, seed=index)).save(root / split / "images" / f"{stem}.png")
        mask = np.zeros((height, width, 3), dtype=np.uint8)
        for color, (y0, y1, x0, x1) in boxes:
            mask[y0:y1, x0:x1] = color
        mask_path = root / split / "Semantic_masks" / "images" / f"{stem}_instance_color_RGB.png"
        Image.fromarray(mask).save(mask_path)
    return root


def make_dlrsd(root: Path) -> Path:
    """RAW/UCMerced_LandUse/Images/<class>/<name>.tif and RAW/DLRSD/Images/<class>/<name>.png (palette)."""
    palette = [channel for color in DLRSD_PALETTE for channel in color]
    for index, (scene, (top, bottom)) in enumerate(DLRSD_SCENES.items()):
        (root / "UCMerced_LandUse" / "Images" / scene).mkdir(parents=True, exist_ok=True)
        (root / "DLRSD" / "Images" / scene).mkdir(parents=True, exist_ok=True)
        for number in range(DLRSD_PER_CLASS):
            name = f"{scene}{number:02d}"
            image = texture(DLRSD_SIZE, DLRSD_SIZE, seed=10 * index + number)
            Image.fromarray(image).save(root / "UCMerced_LandUse" / "Images" / scene / f"{name}.tif")
            label = np.full((DLRSD_SIZE, DLRSD_SIZE), top, dtype=np.uint8)
            label[DLRSD_SIZE // 2 :] = bottom
            png = Image.fromarray(label, mode="P")
            png.putpalette(palette)
            png.save(root / "DLRSD" / "Images" / scene / f"{name}.png")
    return root


def _write_geotiff(path: Path, bands: np.ndarray) -> None:
    """Write C×H×W uint8 bands as a GeoTIFF in UTM 32N at 0.5 m."""
    import rasterio
    from rasterio.transform import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        dtype="uint8",
        count=bands.shape[0],
        height=bands.shape[1],
        width=bands.shape[2],
        crs="EPSG:32632",
        transform=Affine(0.5, 0.0, 346000.0, 0.0, -0.5, 5648000.0),
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)


def make_openearthmap(root: Path) -> Path:
    """RAW/{train,val,test}.txt and RAW/<region>/{images,labels}/<name>.tif (OpenEarthMap_wo_xBD)."""
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for index, (name, (split, height, width, background, boxes)) in enumerate(OEM_SCENES.items()):
        lists[split].append(name)
        region = name.rsplit("_", 1)[0]
        if region != "palu":
            image = texture(height, width, seed=20 + index).transpose(2, 0, 1)
            _write_geotiff(root / region / "images" / name, image)
        if split != "test":
            label = np.full((height, width), background, dtype=np.uint8)
            for value, (y0, y1, x0, x1) in boxes:
                label[y0:y1, x0:x1] = value
            _write_geotiff(root / region / "labels" / name, label[None])
    for split, names in lists.items():
        (root / f"{split}.txt").write_text("".join(f"{name}\n" for name in names))
    return root


def make_all(out: Path) -> dict[str, Path]:
    """Write the three fake downloads under ``out``; returns dataset name -> raw folder."""
    out = Path(out)
    return {
        "isaid": make_isaid(out / "isaid"),
        "dlrsd": make_dlrsd(out / "dlrsd"),
        "openearthmap": make_openearthmap(out / "openearthmap"),
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_fake_raw.py OUTDIR")
    for dataset, folder in make_all(Path(sys.argv[1])).items():
        print(f"{dataset}: {folder}")
