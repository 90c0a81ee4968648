"""``aeroseg prepare labels``: polygons of three classes in another CRS rasterised on a GeoTIFF's grid, tiled,
split, resumed and refused in one line; then ``aeroseg train`` (2 steps) and ``aeroseg evaluate`` on it."""

from __future__ import annotations

import json
import re
import sys

import geopandas
import numpy as np
import pytest
import rasterio
import shapely
import yaml
from PIL import Image
from rasterio.transform import from_origin
from rasterio.warp import transform

from aeroseg.cli import main
from aeroseg.data import DatasetInfo, SegmentationDataset
from aeroseg.data.vector_labels import read_labels
from aeroseg.errors import UserError
from tests.test_train import write_tiny_config

ORIGIN = (500_000.0, 5_000_000.0)  # upper-left corner in EPSG:32631, 1 m pixels
HEIGHT, WIDTH = 160, 192
BOXES = [  # class, (row0, row1, col0, col1) in pixels
    ("building", (10, 50, 20, 80)),
    ("road", (0, HEIGHT, 100, 116)),  # a road from top to bottom, so the val strip has labels
    ("water", (60, 150, 130, 180)),
    ("building", (120, 156, 10, 60)),
]


def pixel_box_in_degrees(rows: tuple[int, int], cols: tuple[int, int]) -> shapely.Polygon:
    """The pixel box as a polygon in EPSG:4326, its edges densified so that it stays the box in UTM."""
    (r0, r1), (c0, c1) = rows, cols
    edge = np.linspace(0, 1, 17)
    xs = np.concatenate([c0 + (c1 - c0) * edge, np.full(17, c1), c1 - (c1 - c0) * edge, np.full(17, c0)])
    ys = np.concatenate([np.full(17, r0), r0 + (r1 - r0) * edge, np.full(17, r1), r1 - (r1 - r0) * edge])
    lon, lat = transform("EPSG:32631", "EPSG:4326", ORIGIN[0] + xs, ORIGIN[1] - ys)
    return shapely.Polygon(zip(lon, lat, strict=True))


def write_scene(path, crs="EPSG:32631", seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (3, HEIGHT, WIDTH), dtype=np.uint8)
    profile = dict(driver="GTiff", height=HEIGHT, width=WIDTH, count=3, dtype="uint8", crs=crs)
    with rasterio.open(path, "w", transform=from_origin(*ORIGIN, 1, 1), **profile) as ds:
        ds.write(rgb)
    return rgb


def expected_mask(ignore_edges: bool = True) -> np.ndarray:
    """Class ids of the boxes (building 0, road 1, water 2; later boxes win), 255 elsewhere; with
    ``ignore_edges`` the pixels on a box's border (254) are left out of the comparison."""
    mask = np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)
    ids = {"building": 0, "road": 1, "water": 2}
    for name, (r0, r1, c0, c1) in BOXES:
        mask[r0:r1, c0:c1] = ids[name]
        if ignore_edges:
            for rows, cols in ((slice(r0, r0 + 1), slice(c0, c1)), (slice(r1 - 1, r1), slice(c0, c1))):
                mask[rows, cols] = 254
            mask[r0:r1, c0 : c0 + 1] = mask[r0:r1, c1 - 1 : c1] = 254
    return mask


@pytest.fixture
def scene(tmp_path):
    """scene.tif (EPSG:32631) and labels.gpkg (EPSG:4326, field ``class``, and ``code`` left empty)."""
    rgb = write_scene(tmp_path / "scene.tif")
    frame = geopandas.GeoDataFrame(
        {"class": [n for n, _ in BOXES], "code": [None] * len(BOXES)},
        geometry=[pixel_box_in_degrees(b[:2], b[2:]) for _, b in BOXES],
        crs="EPSG:4326",
    )
    frame.to_file(tmp_path / "labels.gpkg")
    return tmp_path, rgb, frame


def prepare(tmp_path, *extra, labels="labels.gpkg", image="scene.tif", out="data"):
    argv = ["prepare", "labels", "--image", str(tmp_path / image), "--labels", str(tmp_path / labels)]
    return main([*argv, "--field", "class", "--tile", "64", "-o", str(tmp_path / out), "--quiet", *extra])


def stitched(out, split, offset=0):
    """The full-image mask and pixels of a split's tiles (``<stem>_<y0>_<y1>_<x0>_<x1>``), rows from ``offset``."""
    mask = np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)
    rgb = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    for path in sorted((out / split / "masks").glob("*.png")):
        y0, y1, x0, x1 = map(int, re.findall(r"\d+", path.stem)[-4:])
        tile = np.asarray(Image.open(path))
        image = np.asarray(Image.open(out / split / "images" / path.name))
        h, w = min(y1, HEIGHT - offset) - y0, min(x1, WIDTH) - x0  # tiles of a small part are padded
        mask[offset + y0 : offset + y0 + h, x0 : x0 + w] = tile[:h, :w]
        rgb[offset + y0 : offset + y0 + h, x0 : x0 + w] = image[:h, :w]
    return mask, rgb


CUT = HEIGHT - round(HEIGHT * 0.2)  # the bottom fifth of the rows is val


def whole(out) -> tuple[np.ndarray, np.ndarray]:
    """The mask and pixels of the image put together from the train and val tiles."""
    (train, train_rgb), (val, val_rgb) = stitched(out, "train"), stitched(out, "val", offset=CUT)
    top = np.arange(HEIGHT)[:, None] < CUT
    return np.where(top, train, val), np.where(top[..., None], train_rgb, val_rgb)


def test_polygons_in_another_crs_land_on_the_image_grid(scene):
    tmp_path, rgb, _ = scene
    assert prepare(tmp_path, "--unseen", "water") == 0
    out = tmp_path / "data"
    info = DatasetInfo.from_yaml(out / "dataset.yaml")
    assert (info.name, info.classes, info.unseen) == ("labels", ["building", "road", "water"], ["water"])
    mask, both = whole(out)
    expected = expected_mask()
    scored = expected != 254
    labelled_tiles = mask != 255  # dropped all-ignore tiles read back as 255, as they should
    np.testing.assert_array_equal(mask[scored], expected[scored])
    np.testing.assert_array_equal(both[labelled_tiles], rgb.transpose(1, 2, 0)[labelled_tiles])
    assert all(re.fullmatch(r"scene_\d+_\d+_\d+_\d+", p.stem) for p in (out / "val" / "masks").glob("*.png"))
    assert len(SegmentationDataset(out, "train")) > len(SegmentationDataset(out, "val")) > 0

    assert prepare(tmp_path, "--unseen", "water") == 0  # resumed: everything is there
    assert prepare(tmp_path, "--unseen", "water", "--all-touched") == 2  # other options are refused


def test_all_touched_background_classes_and_val_images(scene, tmp_path):
    base, _, frame = scene
    ditch = shapely.Polygon(
        [(0.2, 5.1), (150.2, 125.1), (150.5, 125.1), (0.5, 5.1)]
    )  # 0.3 px wide, in pixels
    ring = shapely.get_coordinates(shapely.segmentize(ditch, 1))
    lon, lat = transform("EPSG:32631", "EPSG:4326", ORIGIN[0] + ring[:, 0], ORIGIN[1] - ring[:, 1])
    thin = geopandas.GeoDataFrame(
        {"class": ["ditch"]}, geometry=[shapely.Polygon(zip(lon, lat, strict=True))], crs=4326
    )
    pd_concat = geopandas.pd.concat([frame[["class", "geometry"]], thin], ignore_index=True)
    geopandas.GeoDataFrame(pd_concat, crs=4326).to_file(base / "thin.gpkg")
    assert prepare(base, "--all-touched", labels="thin.gpkg", out="touched") == 0
    assert prepare(base, labels="thin.gpkg", out="centres") == 0
    touched, _ = whole(base / "touched")
    centres, _ = whole(base / "centres")
    ditch_id = DatasetInfo.from_yaml(base / "touched" / "dataset.yaml").classes.index("ditch")
    assert (touched == ditch_id).sum() > 1.5 * 121 > (centres == ditch_id).sum() > 0  # it crosses 121 rows
    assert prepare(base, "--background", "other", "--classes", "water,building", out="background") == 0
    info = DatasetInfo.from_yaml(base / "background" / "dataset.yaml")
    assert info.classes == ["water", "building", "other"]
    mask, _ = whole(base / "background")
    expected = expected_mask()
    assert set(np.unique(mask[expected == 1])) == {2}  # road features skipped: background there
    assert (mask[expected == 2] == 0).all() and 255 not in np.unique(mask)
    write_scene(base / "second.tif", seed=1)
    argv = [
        "--image",
        str(base / "scene.tif"),
        str(base / "second.tif"),
        "--val-image",
        str(base / "second.tif"),
    ]
    assert (
        main(
            [
                "prepare",
                "labels",
                *argv,
                "--labels",
                str(base / "labels.gpkg"),
                "--field",
                "class",
                "--tile",
                "64",
                "-o",
                str(base / "two"),
                "--quiet",
            ]
        )
        == 0
    )
    assert {p.stem.split("_")[0] for p in (base / "two" / "val" / "masks").glob("*.png")} == {"second"}
    assert {p.stem.split("_")[0] for p in (base / "two" / "train" / "masks").glob("*.png")} == {"scene"}


def test_geoparquet_labels_equal_the_geopackage(scene):
    tmp_path, _, frame = scene
    frame.to_crs("EPSG:3857").to_parquet(tmp_path / "labels.parquet")
    assert prepare(tmp_path, labels="labels.parquet", out="parquet") == 0
    assert prepare(tmp_path, out="gpkg") == 0
    for split in ("train", "val"):
        a = sorted((tmp_path / "parquet" / split / "masks").glob("*.png"))
        b = sorted((tmp_path / "gpkg" / split / "masks").glob("*.png"))
        assert [p.name for p in a] == [p.name for p in b]
        for x, y in zip(a, b, strict=True):
            assert (np.asarray(Image.open(x)) != np.asarray(Image.open(y))).mean() < 0.01  # edge pixels


@pytest.mark.filterwarnings("ignore:'crs' was not provided")  # the labels without a CRS, on purpose
@pytest.mark.parametrize(
    "setup, extra, message",
    [
        ("far", [], "no polygon of {labels} overlaps --image {image}"),
        ("nocrs", [], "has no CRS (unknown CRS)"),
        ("image_nocrs", [], "--image {image} has no CRS (unknown CRS)"),
        ("", ["--field", "kind"], "has no field 'kind' (its fields: class, code)"),
        ("", ["--field", "code"], "the field 'code' of {labels} is empty"),
        ("", ["--classes", "building,lake"], "--classes names lake, which no feature"),
        ("", ["--val-fraction", "0.05"], "no polygon lies in the val split"),
        ("", ["--unseen", "lake"], "unseen classes not in 'classes': lake"),
    ],
)
def test_refusals_are_one_line(scene, capsys, setup, extra, message):
    tmp_path, _, frame = scene
    labels, image = tmp_path / "labels.gpkg", tmp_path / "scene.tif"
    if setup == "far":
        frame.set_geometry(frame.translate(40, 0)).to_file(labels)  # 40 degrees east
    elif setup == "nocrs":
        frame.set_crs(None, allow_override=True).to_file(labels)
    elif setup == "image_nocrs":
        write_scene(image, crs=None)
    if message.startswith("no polygon lies"):  # the top building and the water end above the bottom 5%
        frame.iloc[[0, 2]].to_file(labels)
    code = prepare(tmp_path, *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message.format(labels=labels, image=image) in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "data" / "dataset.yaml").exists()


def test_missing_pyarrow_for_geoparquet_labels(scene, monkeypatch):
    tmp_path, _, frame = scene
    frame.to_parquet(tmp_path / "labels.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserError, match=r'GeoParquet labels needs pyarrow.*"aeroseg\[geo\]"'):
        read_labels(tmp_path / "labels.parquet", "class")


def test_train_two_steps_and_evaluate_on_the_prepared_labels(scene, tiny_backbones):
    tmp_path, _, _ = scene
    assert prepare(tmp_path, "--unseen", "water") == 0
    data, run = tmp_path / "data", tmp_path / "run"
    config = write_tiny_config(tmp_path / "tiny.yaml", tiny_backbones)
    argv = ["train", "--data", str(data), "--out", str(run), "--config", str(config)]
    assert main([*argv, "--steps", "2", "--batch-size", "2", "--save-every", "0"]) == 0
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["back_projection_classes"] == 2  # the seen classes: building, road
    report = tmp_path / "eval.json"
    argv = ["evaluate", "--data", str(data), "--checkpoint", str(run), "--json", str(report)]
    assert main([*argv, "--device", "cpu", "--workers", "0", "--quiet"]) == 0
    document = json.loads(report.read_text())
    assert document["classes"] == ["building", "road", "water"] and document["unseen"] == ["water"]
    assert all(0 <= document[k] <= 100 for k in ("s_miou", "u_miou")) and document["num_images"] > 0
