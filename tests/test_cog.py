"""Cloud-Optimized GeoTIFF outputs: the class and score rasters of ``aeroseg predict``, the Python API, the
writers Ray parts go through, and serve's download, checked with rio-cogeo's validator; nearest overviews of
class ids, average overviews of scores; ``--no-cog``."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

import aeroseg
from aeroseg.cli import main
from aeroseg.prediction.classes import make_class_list
from aeroseg.prediction.outputs import GeoTiffWriter
from tests.test_inference import PixelModel
from tests.test_predict import smooth_image
from tests.test_predict_inputs import TRANSFORM, write_geotiff

CLASSES = ["tree", "building", "sand"]


def assert_cog(path) -> None:
    valid, errors, warnings = cog_validate(str(path))
    assert valid and not errors and not warnings, (path, errors, warnings)


@pytest.fixture
def scene(tmp_path):
    """A 700×600 GeoTIFF: larger than 512 pixels, so a valid COG needs overviews."""
    return write_geotiff(tmp_path / "scene.tif", smooth_image(700, 600))


def test_predict_writes_cogs_with_nearest_and_average_overviews(scene, tmp_path, standin):
    out = tmp_path / "out"
    argv = ["predict", scene, "--classes", ",".join(CLASSES), "-o", str(out), "--window", "64", "--scores"]
    assert main([*argv, "--quiet"]) == 0
    assert_cog(out / "scene.tif")
    assert_cog(out / "scene_scores.tif")
    with rasterio.open(out / "scene.tif") as ds:
        ids = ds.read(1)
        assert ds.overviews(1) == [2, 4] and ds.block_shapes == [(256, 256)] and ds.crs == "EPSG:32633"
        assert ds.transform == TRANSFORM and ds.colormap(1)[1] == (60, 180, 75, 255) and ds.nodata == 255
        assert ds.tags()["AEROSEG_CLASSES"] == '["tree", "building", "sand"]'
        overview = ds.read(1, out_shape=(175, 150))  # the factor-4 overview
    assert set(np.unique(overview)) <= set(np.unique(ids))  # nearest: ids, never a mean of ids
    np.testing.assert_array_equal(overview[:, :], ids[1::4, 1::4][:175, :150])
    with rasterio.open(out / "scene_scores.tif") as ds:
        scores = ds.read(1)
        halved = ds.read(1, out_shape=(350, 300))  # the factor-2 overview
    mean = scores.reshape(350, 2, 300, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(halved, mean, rtol=1e-5)  # average
    assert main([*argv, "--quiet"]) == 0  # a rerun sees them finished


def test_no_cog_keeps_the_tiled_geotiff(scene, tmp_path, standin):
    out = tmp_path / "plain"
    argv = ["predict", scene, "--classes", ",".join(CLASSES), "-o", str(out), "--window", "64", "--no-cog"]
    assert main([*argv, "--quiet"]) == 0
    _, _, warnings = cog_validate(str(out / "scene.tif"))
    assert any("overviews" in w for w in warnings)
    with rasterio.open(out / "scene.tif") as ds:
        assert ds.overviews(1) == [] and ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG"
    cog = tmp_path / "cog"
    assert main([*argv[:-1], "--quiet", "-o", str(cog)]) == 0
    with rasterio.open(out / "scene.tif") as a, rasterio.open(cog / "scene.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_python_api_writes_cogs(scene, tmp_path):
    result = aeroseg.predict(PixelModel().eval(), scene, CLASSES, tmp_path / "api", window=64, scores=True)
    assert_cog(result.outputs["classes"])
    assert_cog(result.outputs["scores"])
    plain = aeroseg.predict(PixelModel().eval(), scene, CLASSES, tmp_path / "plain", window=64, cog=False)
    with rasterio.open(plain.outputs["classes"]) as ds:
        assert ds.overviews(1) == []
        np.testing.assert_array_equal(ds.read(1), result.class_map)


def test_the_writer_makes_cogs_window_by_window(tmp_path):
    """The writer every prediction writes through (Ray parts too): COGs however the windows come."""
    classes = make_class_list(CLASSES)
    profile = dict(height=600, width=520, crs="EPSG:32633", transform=TRANSFORM)
    writer = GeoTiffWriter(
        tmp_path / "part.tif", profile, classes, source="x", scores_path=tmp_path / "s.tif"
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, (600, 520)).astype(np.uint8)
    confidence = rng.random((600, 520), dtype=np.float32)
    for top in range(0, 600, 100):  # rows of windows, as a band of a scene arrives
        window = Window(0, top, 520, 100)
        writer.write(window, ids[top : top + 100], confidence[top : top + 100])
    assert not (tmp_path / "part.tif").exists()  # nothing under the final name before finish
    writer.finish()
    assert_cog(tmp_path / "part.tif")
    assert_cog(tmp_path / "s.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.tif", "s.tif"]  # no temporary left
    with rasterio.open(tmp_path / "part.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), ids)
        assert ds.descriptions[0].startswith("class id: 0=tree, 1=building, 2=sand")


def test_serve_downloads_a_cog(tmp_path):
    pytest.importorskip("fastapi")
    from tests.test_serve import authorised, download, run, serve

    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(600, 560))
    checkpoint = tmp_path / "tiny"
    from tests.helpers.tiny import build_tiny_model

    build_tiny_model().save_pretrained(checkpoint)
    with serve(scene, "--checkpoint", str(checkpoint), "--window", "64") as (app, _):
        client = authorised(app)
        raster = client.get("/api/state").json()["rasters"][0]
        job = run(client, raster=raster["id"], scope="image")
        path = download(client, job, tmp_path)
    assert_cog(path)
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4] and ds.crs == "EPSG:32633"
