"""STAC inputs of ``aeroseg predict`` and the Python API: Items, ItemCollections and catalogs on disk and over
HTTP, a STAC API search (a tiny API on 127.0.0.1), asset and band choice, and the outputs' STAC Items."""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pystac.extensions.classification import ClassificationExtension
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate

import aeroseg
from aeroseg.cli import main
from aeroseg.errors import UserError
from aeroseg.prediction.paths import input_stem
from aeroseg.stac import StacInput, StacOptions, band_numbers, choose_asset, iter_inputs
from tests.test_inference import PixelModel

HELPER = Path(__file__).parent / "helpers" / "stac_api.py"
CLASSES = ["tree", "building", "sand"]  # the stand-in model gives each about a third of random colours
EO_BANDS = [  # the data asset stores blue, green, red, near infrared
    {"name": "B02", "common_name": "blue"},
    {"name": "B03", "common_name": "green"},
    {"name": "B04", "common_name": "red"},
    {"name": "B08", "common_name": "nir"},
]
SCENES = {  # id -> (collection, datetime, easting of the upper-left corner)
    "scene-a": ("aerial", datetime(2024, 6, 1, tzinfo=timezone.utc), 500_000),
    "scene-b": ("aerial", datetime(2024, 7, 15, tzinfo=timezone.utc), 600_000),
    "scene-c": ("other", datetime(2024, 6, 10, tzinfo=timezone.utc), 500_000),
}


def write_scene(folder: Path, name: str, east: float, seed: int) -> tuple[Path, Path]:
    """``<name>.tif`` (4 bands: blue, green, red, nir) and ``<name>_visual.tif`` (its red, green, blue)."""
    rng = np.random.default_rng(seed)
    rgb = np.kron(rng.integers(0, 256, (3, 6, 5)), np.ones((16, 16))).astype(np.uint8)  # (3, 96, 80)
    nir = rng.integers(0, 256, rgb.shape[1:], dtype=np.uint8)
    profile = dict(driver="GTiff", height=96, width=80, dtype="uint8", crs="EPSG:32631")
    profile["transform"] = from_origin(east, 5_000_000, 2, 2)
    data, visual = folder / f"{name}.tif", folder / f"{name}_visual.tif"
    with rasterio.open(data, "w", count=4, photometric="minisblack", **profile) as ds:  # no alpha band
        ds.write(np.stack([rgb[2], rgb[1], rgb[0], nir]))
    with rasterio.open(visual, "w", count=3, **profile) as ds:
        ds.write(rgb)
    return data, visual


def make_item(name: str, data: str, visual: str) -> pystac.Item:
    collection, when, east = SCENES[name]
    bbox = list(transform_bounds("EPSG:32631", "EPSG:4326", east, 5_000_000 - 192, east + 160, 5_000_000))
    west, south, east_, north = bbox
    ring = [[west, south], [east_, south], [east_, north], [west, north], [west, south]]
    item = pystac.Item(
        name, {"type": "Polygon", "coordinates": [ring]}, bbox, when, {}, collection=collection
    )
    item.add_asset("visual", pystac.Asset(visual, media_type=pystac.MediaType.GEOTIFF, roles=["visual"]))
    data_asset = pystac.Asset(data, media_type=pystac.MediaType.GEOTIFF, roles=["data"])
    data_asset.extra_fields["eo:bands"] = EO_BANDS
    item.add_asset("data", data_asset)
    item.add_asset(
        "thumbnail", pystac.Asset("thumb.png", media_type=pystac.MediaType.PNG, roles=["thumbnail"])
    )
    return item


@pytest.fixture
def catalog(tmp_path) -> Path:
    """``scenes/`` (the GeoTIFFs), ``catalog/`` (a self-contained static catalog with relative asset hrefs)
    and ``items.json`` (an ItemCollection with hrefs relative to it)."""
    root = tmp_path / "stac"
    (root / "scenes").mkdir(parents=True)
    files = {
        name: write_scene(root / "scenes", name, east, i)
        for i, (name, (_, _, east)) in enumerate(SCENES.items())
    }
    cat = pystac.Catalog("test-catalog", "scenes of the tests")
    for name, (data, visual) in files.items():
        cat.add_item(make_item(name, str(data), str(visual)))
    cat.normalize_hrefs(str(root / "catalog"))
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    relative = [make_item(n, f"scenes/{d.name}", f"scenes/{v.name}") for n, (d, v) in list(files.items())[:2]]
    (root / "items.json").write_text(json.dumps(pystac.ItemCollection(relative).to_dict()))
    return root


def class_ids(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def predict(argv: list[str], out: Path, standin) -> int:
    return main(
        ["predict", *argv, "--classes", ",".join(CLASSES), "-o", str(out), "--window", "32", "--quiet"]
    )


# ------------------------------------------------------------------------------------------ static catalog
def test_item_is_segmented_named_and_described(catalog, tmp_path, standin):
    item_file = catalog / "catalog" / "scene-a" / "scene-a.json"
    out = tmp_path / "out"
    assert predict([str(item_file), "--scores"], out, standin) == 0
    classes, item_out = out / "scene-a.tif", out / "scene-a.json"
    assert sorted(p.name for p in out.iterdir()) == ["scene-a.json", "scene-a.tif", "scene-a_scores.tif"]
    for raster in (classes, out / "scene-a_scores.tif"):
        valid, errors, warnings = cog_validate(str(raster))
        assert valid and not errors and not warnings
    with rasterio.open(out / "scene-a_scores.tif") as ds:
        assert ds.tags()["AEROSEG_STAC_ITEM"] == "scene-a"
    with rasterio.open(classes) as ds:
        tags = ds.tags()
    assert tags["AEROSEG_STAC_ITEM"] == "scene-a" and tags["AEROSEG_STAC_COLLECTION"] == "aerial"
    assert tags["AEROSEG_STAC_ASSET"] == "visual" and tags["AEROSEG_STAC_DATETIME"].startswith(
        "2024-06-01T00:00:00"
    )
    links = {link["rel"]: link["href"] for link in json.loads(tags["AEROSEG_STAC_LINKS"])}
    assert links["self"] == str(item_file) and Path(links["root"]) == catalog / "catalog" / "catalog.json"

    written = pystac.Item.from_file(str(item_out))
    assert written.id == "scene-a-aeroseg" and written.datetime == SCENES["scene-a"][1]
    assert written.bbox == pytest.approx(pystac.Item.from_file(str(item_file)).bbox)
    assert [link.get_absolute_href() for link in written.links if link.rel == "derived_from"] == [
        str(item_file)
    ]
    asset = written.assets["classes"]
    assert Path(asset.get_absolute_href()) == classes and asset.media_type == pystac.MediaType.COG
    found = ClassificationExtension.ext(asset).classes
    assert [(c.value, c.title) for c in found] == [
        (0, "tree"),
        (1, "building"),
        (2, "sand"),
        (255, "no data"),
    ]
    assert [c.name for c in found] == ["tree", "building", "sand", "nodata"] and found[-1].nodata
    assert all(len(c.color_hint) == 6 for c in found[:3])
    assert written.properties["proj:code"] == "EPSG:32631" and written.properties["proj:shape"] == [96, 80]
    assert Path(written.assets["scores"].get_absolute_href()) == out / "scene-a_scores.tif"
    before = item_out.stat().st_mtime_ns
    assert predict([str(item_file), "--scores"], out, standin) == 0  # finished: skipped, files kept
    assert item_out.stat().st_mtime_ns == before


def test_assets_by_role_and_bands_by_eo_names(catalog, tmp_path, standin):
    item_file = str(catalog / "catalog" / "scene-a" / "scene-a.json")
    scene = catalog / "scenes" / "scene-a.tif"
    runs = {
        "visual": [item_file],  # role visual: the RGB file
        "data": [item_file, "--asset", "data"],  # eo:bands common names red, green, blue -> bands 3, 2, 1
        "false": [item_file, "--asset", "data", "--bands", "B08,B04,B03"],  # by eo:bands names
        "file_rgb": [str(scene), "--bands", "3,2,1"],
        "file_false": [str(scene), "--bands", "4,3,2"],
        "file_plain": [str(scene)],  # bands 1, 2, 3: blue, green, red
    }
    ids = {}
    for name, argv in runs.items():
        out = tmp_path / name
        assert predict(argv, out, standin) == 0
        ids[name] = class_ids(next(out.glob("*.tif")))
    np.testing.assert_array_equal(ids["visual"], ids["file_rgb"])
    np.testing.assert_array_equal(ids["data"], ids["file_rgb"])
    np.testing.assert_array_equal(ids["false"], ids["file_false"])
    assert (ids["file_plain"] != ids["file_rgb"]).mean() > 0.1  # the band order matters to the model
    assert (ids["file_false"] != ids["file_rgb"]).mean() > 0.1
    with rasterio.open(tmp_path / "false" / "scene-a.tif") as ds:
        assert json.loads(ds.tags()["AEROSEG_SETTINGS"])["bands"] == ["B08", "B04", "B03"]


def test_item_collection_and_catalog_give_every_item(catalog, tmp_path, standin):
    out = tmp_path / "collection"
    assert predict([str(catalog / "items.json"), "--json", str(tmp_path / "run.json")], out, standin) == 0
    assert sorted(p.name for p in out.glob("*.tif")) == ["scene-a.tif", "scene-b.tif"]
    records = json.loads((tmp_path / "run.json").read_text())["images"]
    assert [r["stac_item"] for r in records] == ["scene-a", "scene-b"]
    assert records[0]["input"] == str(catalog / "scenes" / "scene-a_visual.tif")  # relative to items.json
    out = tmp_path / "catalog_out"
    assert predict([str(catalog / "catalog" / "catalog.json")], out, standin) == 0
    assert sorted(p.name for p in out.glob("*.tif")) == ["scene-a.tif", "scene-b.tif", "scene-c.tif"]
    np.testing.assert_array_equal(
        class_ids(out / "scene-a.tif"), class_ids(tmp_path / "collection" / "scene-a.tif")
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{item}", "--asset", "nir"], "has no asset 'nir' (its assets: visual, data, thumbnail)"),
        (
            ["{item}", "--asset", "data", "--bands", "B05,B04,B03"],
            "has no band called 'B05' (its bands: b02/blue",
        ),
        (["{item}", "--bands", "red,green,blue"], "asset 'visual' describes no bands (eo:bands)"),
        (["{scene}", "--bands", "red,green,blue"], "is not a STAC file: give band numbers"),
        (["{root}/missing.json"], "does not exist"),
        (["{scene_json}"], "cannot read the STAC file"),
        ([], "nothing to segment"),
    ],
)
def test_refusals_are_one_line(catalog, tmp_path, standin, capsys, argv, message):
    (catalog / "broken.json").write_text("{not json")
    names = dict(
        item=catalog / "catalog" / "scene-a" / "scene-a.json", scene=catalog / "scenes" / "scene-a.tif",
        root=catalog, scene_json=catalog / "broken.json",
    )  # fmt: skip
    assert predict([a.format(**names) for a in argv], tmp_path / "out", standin) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_an_item_without_a_visual_or_data_asset_is_refused():
    item = pystac.Item("x", None, None, datetime(2024, 1, 1), {})
    item.add_asset("metadata", pystac.Asset("meta.xml", media_type=pystac.MediaType.XML, roles=["metadata"]))
    with pytest.raises(UserError, match="no raster asset with the role 'visual' or 'data'.*--asset KEY"):
        choose_asset(item, None)
    item.add_asset("image", pystac.Asset("x.tif", media_type=pystac.MediaType.COG, roles=["data"]))
    assert choose_asset(item, None) == "image"


def test_band_numbers_follow_the_common_names():
    assert band_numbers(EO_BANDS, None, "x") == (3, 2, 1)
    assert band_numbers(EO_BANDS[2::-1], None, "x") is None  # already red, green, blue: the reader's choice
    assert band_numbers([{"name": "B1"}, {"name": "B2"}], None, "x") is None  # no common names
    assert band_numbers(EO_BANDS, ["nir"], "x") == (4,)  # grey from one band
    stac11 = [
        {"name": "b1", "eo:common_name": "green"},
        {"name": "b2", "eo:common_name": "red"},
        {"name": "b3", "eo:common_name": "blue"},
    ]
    assert band_numbers(stac11, None, "x") == (2, 1, 3)


def test_class_names_become_classification_keys():
    from aeroseg.stac import _class_key

    assert (
        _class_key("storage tank", 3) == "storage_tank"
        and _class_key("ground-track field", 0) == "ground-track_field"
    )
    assert _class_key("水体", 4) == "class_4"  # the name itself is the class's title


def test_stac_inputs_travel_to_ray_workers_with_their_item(catalog):
    (image,) = iter_inputs([str(catalog / "catalog" / "scene-a" / "scene-a.json")], StacOptions(asset="data"))
    assert isinstance(image, StacInput) and image == str(catalog / "scenes" / "scene-a.tif")
    copy = pickle.loads(pickle.dumps(image))
    assert isinstance(copy, StacInput) and copy == image and copy.bands == (3, 2, 1)
    assert copy.item == image.item and copy.stem == "scene-a" == input_stem(copy)


def test_python_api_takes_a_pystac_item(catalog, tmp_path):
    model = PixelModel().eval()
    item = pystac.Item.from_file(str(catalog / "catalog" / "scene-a" / "scene-a.json"))
    result = aeroseg.predict(
        model, item, CLASSES, tmp_path / "api", window=32, vector=tmp_path / "api" / "p.parquet"
    )
    assert (
        set(result.outputs) == {"classes", "item", "vector"}
        and result.outputs["classes"].name == "scene-a.tif"
    )
    assert cog_validate(str(result.outputs["classes"]))[0]
    false = aeroseg.predict(
        model,
        item,
        CLASSES,
        tmp_path / "false" / "x.tif",
        window=32,
        asset="data",
        bands=["B08", "B04", "B03"],
    )
    plain = aeroseg.predict(
        model, str(catalog / "scenes" / "scene-a.tif"), CLASSES, window=32, bands=[4, 3, 2]
    )
    np.testing.assert_array_equal(false.class_map, plain.class_map)
    assert pystac.Item.from_file(str(tmp_path / "false" / "x.json")).assets["classes"].href == "./x.tif"


def test_missing_extra_is_named(monkeypatch, catalog):
    monkeypatch.setitem(sys.modules, "pystac", None)
    with pytest.raises(
        UserError, match=r'a STAC input needs pystac, which is not installed: pip install "aeroseg\[geo\]"'
    ):
        list(iter_inputs([str(catalog / "items.json")]))


# ------------------------------------------------------------------------------------------ over HTTP
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stac_api(catalog):
    """The catalog's folder served by the tiny STAC API of tests/helpers/stac_api.py on 127.0.0.1, with the
    Items of ``search/`` pointing at its assets over HTTP."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (catalog / "search").mkdir()
    for name in SCENES:
        item = make_item(name, f"{base}/scenes/{name}.tif", f"{base}/scenes/{name}_visual.tif")
        item.set_self_href(f"{base}/search/{name}.json")
        (catalog / "search" / f"{name}.json").write_text(json.dumps(item.to_dict()))
    server = subprocess.Popen(
        [sys.executable, str(HELPER), str(port), str(catalog)], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the test STAC API did not start")
            time.sleep(0.05)
    yield base
    server.terminate()
    server.wait(timeout=10)


def test_search_of_a_stac_api(stac_api, catalog, tmp_path, standin, capsys):
    out = tmp_path / "search"
    argv = ["--stac-search", f"{stac_api}/", "--collection", "aerial", "--bbox", "2.9,44,3.2,45.2"]
    assert predict([*argv, "--datetime", "2024-05-01/2024-06-30", "--asset", "data"], out, standin) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "scene-a.json",
        "scene-a.tif",
    ]  # b: July; c: other collection
    query = json.loads((catalog / "searches.jsonl").read_text().splitlines()[-1])
    assert query["collections"] == ["aerial"] and query["datetime"].startswith("2024-05-01")
    assert query["bbox"] == [2.9, 44, 3.2, 45.2]
    np.testing.assert_array_equal(class_ids(out / "scene-a.tif"), _local(catalog, tmp_path, standin))
    derived = pystac.Item.from_file(str(out / "scene-a.json")).get_single_link("derived_from")
    assert derived.href == f"{stac_api}/search/scene-a.json"

    capsys.readouterr()
    assert predict(["--stac-search", stac_api, "--max-items", "1"], tmp_path / "capped", standin) == 0
    assert "found more than 1 Items; the first 1 are segmented" in capsys.readouterr().err
    assert len(list((tmp_path / "capped").glob("*.tif"))) == 1
    assert predict(["--stac-search", stac_api, "--collection", "none"], tmp_path / "none", standin) == 2
    assert "found no Item" in capsys.readouterr().err


def test_remote_item_and_unreachable_api(stac_api, tmp_path, standin, capsys):
    out = tmp_path / "remote"
    assert predict([f"{stac_api}/catalog/scene-b/scene-b.json"], out, standin) == 0
    with rasterio.open(out / "scene-b.tif") as ds:
        assert ds.tags()["AEROSEG_SOURCE"] == f"{stac_api}/scenes/scene-b_visual.tif"  # read over HTTP
    closed = f"http://127.0.0.1:{free_port()}/"
    assert predict(["--stac-search", closed], tmp_path / "x", standin) == 2
    err = capsys.readouterr().err.strip()
    assert f"STAC search of {closed} failed" in err and len(err.splitlines()) == 1


def _local(catalog: Path, tmp_path: Path, standin) -> np.ndarray:
    out = tmp_path / "local"
    assert predict([str(catalog / "scenes" / "scene-a.tif"), "--bands", "3,2,1"], out, standin) == 0
    return class_ids(out / "scene-a.tif")
