"""The Python predict API, the vector output and ``aeroseg predict`` with a real (tiny) AerOSeg checkpoint."""

import json

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import torch

import aeroseg
import aeroseg.registry
from aeroseg.cli import main
from aeroseg.errors import UserError
from aeroseg.prediction import PredictionResult, predict
from tests.test_inference import PixelModel
from tests.test_predict import CLASSES, expected_ids, smooth_image
from tests.test_predict_inputs import write_geotiff


def test_predict_an_array_returns_the_class_map_scores_and_names():
    model = PixelModel()
    image = smooth_image(90, 100, seed=1).transpose(1, 2, 0)  # (H, W, 3) uint8
    result = predict(model, image, ["building", "road", "tree|forest", "water"], window=64)
    assert isinstance(result, PredictionResult) and result.outputs == {}
    assert result.class_map.shape == (90, 100) and result.class_map.dtype == np.uint8
    assert result.scores.shape == (90, 100) and result.scores.dtype == np.float32
    assert result.class_names == ["building", "road", "tree", "water"]
    np.testing.assert_array_equal(
        result.class_map, expected_ids(model, image.transpose(2, 0, 1) / np.float32(255), CLASSES)
    )
    tensor = torch.from_numpy(image).permute(2, 0, 1) / 255.0  # a float tensor 3×H×W gives the same
    np.testing.assert_array_equal(predict(model, tensor, CLASSES, window=64).class_map, result.class_map)


def test_a_second_class_list_reuses_the_image_features():
    model = PixelModel()
    image = smooth_image(100, 100, seed=2).transpose(1, 2, 0)
    first = predict(model, image, ["road", "water"], window=64)
    encoded = model.encoded
    second = predict(model, image, ["water", "tree", "road"], window=64)
    assert model.encoded == encoded  # the image encoders did not run again
    np.testing.assert_allclose(second.scores >= first.scores - 1e-6, True)  # a superset of classes
    other = predict(model, image[::-1].copy(), ["road"], window=64)  # another image is encoded anew
    assert model.encoded == 2 * encoded and other.class_map.shape == (100, 100)
    with torch.no_grad():
        model.gain.mul_(2)  # changed weights: features are recomputed
    predict(model, image, ["road"], window=64)
    assert model.encoded == 3 * encoded


def test_predict_a_file_writes_the_outputs(tmp_path):
    model = PixelModel()
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(80, 70, seed=3))
    out = tmp_path / "pred" / "scene_classes.tif"
    out.parent.mkdir()
    result = predict(
        model,
        scene,
        "building,road",
        out,
        window=64,
        scores=True,
        overlay=True,
        vector=tmp_path / "p.geojson",
    )
    assert set(result.outputs) == {"classes", "scores", "overlay", "vector"}
    assert all(path.exists() for path in result.outputs.values())
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(1), result.class_map)
        assert ds.crs.to_epsg() == 32633
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "scene_classes.tif", "scene_classes_overlay.png", "scene_classes_scores.tif",
    ]  # fmt: skip
    with pytest.raises(UserError, match="need output="):
        predict(model, scene, "road", scores=True)


def test_vector_polygons_cover_the_classes_with_their_area(tmp_path, monkeypatch):
    model = PixelModel()
    monkeypatch.setattr(aeroseg.registry, "segmenter", lambda request, device: model)
    data = smooth_image(96, 96, seed=4)
    data[:, :, :32] = 0
    first = write_geotiff(tmp_path / "a.tif", data, nodata=0)
    second = write_geotiff(tmp_path / "b.tif", smooth_image(64, 64, seed=5), crs="EPSG:32632")
    vector = tmp_path / "polygons.gpkg"
    args = ["predict", first, second, "--checkpoint", "c", "--classes", CLASSES, "-o", str(tmp_path / "out")]
    assert main([*args, "--window", "64", "--vector", str(vector)]) == 0
    info = pyogrio.read_info(vector)
    assert info["crs"] == "EPSG:32633" and info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == ["class", "class_id", "area", "source"]
    _, _, _, (names, ids, areas, sources) = pyogrio.raw.read(vector)
    assert set(sources) == {first, second}
    with rasterio.open(tmp_path / "out" / "a.tif") as ds:
        labels = ds.read(1)
    for class_id, name in enumerate(["building", "road", "tree", "water"]):
        mine = (ids == class_id) & (sources == first)
        assert set(names[mine]) <= {name}
        assert areas[mine].sum() == pytest.approx((labels == class_id).sum() * 0.25)  # 0.5 m pixels
    assert (labels[:, :32] == 255).all()  # nodata gives no polygon: the areas above add up without it
    small = tmp_path / "large_only.geojson"
    assert (
        main([*args, "--window", "64", "--vector", str(small), "--min-area", "100", "--simplify", "1"]) == 0
    )
    _, _, _, (_, _, large, _) = pyogrio.raw.read(small)
    assert len(large) < len(areas) and large.min() >= 100
    assert json.loads(small.read_text())["type"] == "FeatureCollection"


def test_cli_with_a_tiny_aeroseg_checkpoint(tmp_path, tiny_backbones):
    from tests.helpers.tiny import build_tiny_model

    checkpoint = tmp_path / "ckpt"
    build_tiny_model(tmp_path).save_pretrained(checkpoint)
    assert isinstance(aeroseg.AerOSeg.from_pretrained(checkpoint), aeroseg.AerOSeg)
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(72, 90, seed=6))
    out = tmp_path / "out"
    args = [
        "predict",
        scene,
        "--checkpoint",
        str(checkpoint),
        "--classes",
        "building,road,tree|forest",
        "-o",
        str(out),
    ]
    assert main([*args, "--window", "64", "--overlap", "0.25", "--device", "cpu", "--precision", "bf16"]) == 0
    with rasterio.open(out / "scene.tif") as ds:
        assert ds.shape == (72, 90) and ds.crs.to_epsg() == 32633
        ids = ds.read(1)
    assert ids.max() <= 2
