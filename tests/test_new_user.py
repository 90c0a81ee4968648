"""Issue 14, items 1–6: what a new user can do that lost or misrepresented data, each reproduced as reported.

Items 7–16 are in ``test_new_user_cli.py``.
"""

import json
import shutil

import numpy as np
import pyogrio
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.windows import Window
from safetensors.torch import load_file, save_file

import aeroseg
import aeroseg.registry
from aeroseg.cli import main
from aeroseg.errors import CheckpointError, UserError
from aeroseg.prediction import predict
from aeroseg.raster import ArraySource, RasterSource
from tests.helpers.tiny import build_tiny_model, tiny_overrides
from tests.test_inference import PixelModel
from tests.test_predict import CLASSES, expected_ids, smooth_image
from tests.test_predict_inputs import write_geotiff


def cli(*args):
    return main(["predict", *args, "--checkpoint", "ckpt", "--window", "64"])


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --- 1. the API overwrote its input -------------------------------------------------------------------
def test_1_predict_refuses_to_write_over_its_input(tmp_path, monkeypatch):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    before = (tmp_path / "scene.tif").read_bytes()
    with pytest.raises(UserError, match="would overwrite the input"):
        predict(PixelModel(), scene, ["road", "water"], output=scene, window=64)
    monkeypatch.chdir(tmp_path)  # the same file named another way, and as the folder's <stem>.tif
    for output in ("scene.tif", "./", str(tmp_path)):
        with pytest.raises(UserError, match="would overwrite the input"):
            predict(PixelModel(), "scene.tif", ["road"], output=output, window=64)
    assert (tmp_path / "scene.tif").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


# --- 2. backbones of the wrong kind, missing weights --------------------------------------------------
def test_2_wrong_kind_backbone_folders_are_refused_in_one_line(tiny_backbones, tmp_path, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(32, 32))
    sam, clip, sam2 = (str(tiny_backbones[k]) for k in ("sam", "clip", "sam2"))
    rc = main(
        [
            "predict",
            scene,
            "--clip",
            sam,
            "--guidance",
            "none",
            "--classes",
            "road",
            "-o",
            str(tmp_path / "o"),
        ]
    )
    line = one_error_line(capsys)
    assert rc == 2 and sam in line and "holds a SAM model" in line and "CLIP model is expected" in line
    overrides = tiny_overrides("aeroseg", tiny_backbones)
    with pytest.raises(CheckpointError, match=rf"{clip} holds a CLIP model, but a SAM model is expected"):
        aeroseg.build("aeroseg", **{**overrides, "guidance": clip})
    with pytest.raises(CheckpointError, match="holds a SAM2 model, but a SAM model is expected"):
        aeroseg.build("aeroseg", **{**overrides, "guidance": sam2})
    assert not (tmp_path / "o").exists()


def test_2_missing_weights_are_an_error_not_a_report(tiny_backbones, tmp_path, capfd):
    clip = tmp_path / "clip"
    shutil.copytree(tiny_backbones["clip"], clip)
    weights = load_file(clip / "model.safetensors")
    dropped = sorted(k for k in weights if "encoder.layers.1." in k)
    save_file(
        {k: v for k, v in weights.items() if k not in dropped}, clip / "model.safetensors", {"format": "pt"}
    )
    overrides = tiny_overrides("aeroseg", tiny_backbones)
    with pytest.raises(
        CheckpointError, match=rf"--clip {clip}: {len(dropped)} weights of the CLIP model are missing"
    ):
        aeroseg.build("aeroseg", **{**overrides, "clip": str(clip)})
    captured = capfd.readouterr()
    assert "LOAD REPORT" not in captured.out + captured.err and "MISSING" not in captured.out + captured.err


# --- 3. outputs of another run were taken as finished ------------------------------------------------
def test_3_outputs_made_with_other_classes_are_not_finished(tmp_path, standin, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(60, 60))
    out = tmp_path / "out"
    assert cli(scene, "--classes", "road,water", "-o", str(out), "--scores") == 0
    first = (out / "scene.tif").read_bytes()
    capsys.readouterr()
    assert cli(scene, "--classes", "building,tree", "-o", str(out), "--scores") == 2
    line = one_error_line(capsys)
    assert "made with other classes" in line and "--overwrite" in line
    assert (out / "scene.tif").read_bytes() == first  # the old result is neither kept as new nor lost
    assert cli(scene, "--classes", "road,water", "-o", str(out), "--scores", "--overlap", "0.5") == 2
    assert "other --overlap" in one_error_line(capsys)
    assert cli(scene, "--classes", "road,water", "-o", str(out), "--scores", "--quiet") == 0  # same: skipped
    assert (out / "scene.tif").read_bytes() == first
    summary = tmp_path / "s.json"
    args = ["--classes", "building,tree", "-o", str(out), "--overwrite", "--json", str(summary)]
    assert cli(scene, *args) == 0
    with rasterio.open(out / "scene.tif") as ds:
        assert json.loads(ds.tags()["AEROSEG_CLASSES"]) == ["building", "tree"]
        assert json.loads(ds.tags()["AEROSEG_SETTINGS"])["classes"] == ["building", "tree"]
    assert json.loads(summary.read_text())["ok"] == 1


def test_3_another_model_is_another_run(tmp_path, monkeypatch, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    monkeypatch.setattr(aeroseg.registry, "segmenter", lambda request, device: PixelModel())
    out = str(tmp_path / "out")
    assert (
        main(["predict", scene, "--checkpoint", "a", "--classes", "road", "-o", out, "--window", "64"]) == 0
    )
    capsys.readouterr()
    assert (
        main(["predict", scene, "--checkpoint", "b", "--classes", "road", "-o", out, "--window", "64"]) == 2
    )
    assert "made with other model" in one_error_line(capsys)


# --- 4. arrays: layout, float range, bool, uint8 tensors ---------------------------------------------
def test_4_arrays_chw_and_hwc_give_the_same_result():
    model, image = PixelModel(), smooth_image(50, 60, seed=5)  # (3, H, W) uint8
    chw = predict(model, image, CLASSES, window=64).class_map
    hwc = predict(model, image.transpose(1, 2, 0), CLASSES, window=64).class_map
    assert chw.shape == (50, 60)
    np.testing.assert_array_equal(chw, hwc)
    np.testing.assert_array_equal(chw, expected_ids(model, image / np.float32(255), CLASSES))
    tensor = predict(model, torch.from_numpy(image), CLASSES, window=64).class_map  # uint8 tensor C×H×W
    np.testing.assert_array_equal(tensor, chw)
    with pytest.raises(UserError, match="ambiguous"):
        predict(model, np.zeros((3, 40, 3), np.uint8), CLASSES)


def test_4_floats_in_0_255_are_scaled_not_clipped_and_bool_is_refused():
    model, image = PixelModel(), smooth_image(40, 50, seed=6).transpose(1, 2, 0)
    reference = predict(model, image, CLASSES, window=64)
    as_float = predict(model, image.astype(np.float32), CLASSES, window=64)
    np.testing.assert_array_equal(as_float.class_map, reference.class_map)
    unit = predict(model, image / np.float64(255), CLASSES, window=64)
    np.testing.assert_array_equal(unit.class_map, reference.class_map)
    with pytest.raises(UserError, match="a bool array is a mask, not an image"):
        predict(model, image > 100, CLASSES)
    with pytest.raises(UserError, match="a bool array is a mask"):
        predict(model, torch.from_numpy(image > 100), CLASSES)


def test_4_a_uint8_tensor_into_the_model_is_scaled(tiny_backbones):
    model = build_tiny_model().eval()
    images = torch.randint(
        0, 256, (1, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        torch.testing.assert_close(model(images, ["road", "tree"]), model(images / 255.0, ["road", "tree"]))
        with pytest.raises(TypeError, match="float in \\[0, 1\\] or uint8"):
            model(images.bool(), ["road"])


# --- 5. GeoJSON of an image without CRS --------------------------------------------------------------
def test_5_vectors_of_an_image_without_crs_are_refused_unless_pixels_are_asked_for(tmp_path, standin, capsys):
    Image.fromarray(smooth_image(48, 64).transpose(1, 2, 0)).save(tmp_path / "photo.png")
    photo, vector = str(tmp_path / "photo.png"), tmp_path / "poly.geojson"
    assert cli(photo, "--classes", CLASSES, "-o", str(tmp_path / "out"), "--vector", str(vector)) == 2
    line = one_error_line(capsys)
    assert "has no CRS" in line and "--vector-pixels" in line and not vector.exists()
    args = ["--classes", CLASSES, "-o", str(tmp_path / "out"), "--vector", str(vector), "--vector-pixels"]
    assert cli(photo, *args) == 0
    document = json.loads(vector.read_text())
    assert "pixel coordinates" in document["description"] and "y points down" in document["description"]
    assert "crs" not in document
    xs, ys = zip(*(xy for f in document["features"] for xy in f["geometry"]["coordinates"][0]), strict=True)
    assert 0 <= min(ys) and max(ys) <= 48 and max(xs) <= 64  # rows, not flipped
    scene = write_geotiff(tmp_path / "geo.tif", smooth_image(48, 64), crs=None)  # the API says the same
    with pytest.raises(UserError, match="pixel_coordinates=True"):
        predict(
            PixelModel(), scene, ["road"], output=tmp_path / "api" / "geo.tif", vector=tmp_path / "v.gpkg"
        )
    predict(
        PixelModel(), scene, ["road", "water"], output=tmp_path / "api" / "geo.tif",
        vector=tmp_path / "v.gpkg", pixel_coordinates=True, window=64,
    )  # fmt: skip
    assert "pixel coordinates" in pyogrio.read_info(tmp_path / "v.gpkg")["layer_metadata"]["DESCRIPTION"]


# --- 6. float GeoTIFFs in 0..1: one rule for the CLI and the API -------------------------------------
def test_6_a_float_geotiff_in_0_1_is_read_as_it_is_by_cli_and_api(tmp_path, standin):
    image = smooth_image(70, 80, seed=7)
    unit = (image / np.float32(255)).astype(np.float32)
    unit[:, :10, :10] = 0.5  # not a stretch of the extremes: percentiles would move these values
    scene = write_geotiff(tmp_path / "unit.tif", unit)
    with RasterSource(scene) as source:
        read, _ = source.read(Window(0, 0, 80, 70))
    np.testing.assert_allclose(read, unit, atol=1e-6)
    assert cli(scene, "--classes", CLASSES, "-o", str(tmp_path / "out")) == 0
    with rasterio.open(tmp_path / "out" / "unit.tif") as ds:
        by_cli = ds.read(1)
    by_api = predict(standin, scene, CLASSES, window=64).class_map
    by_array = predict(standin, unit, CLASSES, window=64).class_map
    np.testing.assert_array_equal(by_cli, by_api)
    np.testing.assert_array_equal(by_cli, by_array)
    np.testing.assert_array_equal(by_cli, expected_ids(standin, unit, CLASSES))
    wide = write_geotiff(tmp_path / "wide.tif", unit * 1000 - 5)  # beyond [0, 255]: percentiles
    with ArraySource(unit * 1000 - 5) as array, RasterSource(wide) as raster:
        np.testing.assert_allclose(array.read(Window(0, 0, 80, 70))[0], raster.read(Window(0, 0, 80, 70))[0])


def test_3_a_nan_nodata_run_is_recognised_as_finished(tmp_path, standin, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    args = [
        "--classes",
        "road,water",
        "-o",
        str(tmp_path / "out"),
        "--nodata",
        "nan",
        "--json",
        str(tmp_path / "s"),
    ]
    assert cli(scene, *args) == 0
    assert cli(scene, *args) == 0  # NaN != NaN must not make the same run look like another one
    assert json.loads((tmp_path / "s").read_text())["skipped"] == 1
