"""``aeroseg predict`` end to end: outputs, georeferencing, nodata, tiling, folders and errors."""

import json
import re

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.control import GroundControlPoint
from rasterio.windows import Window

import aeroseg.registry
from aeroseg.cli import main
from aeroseg.inference import sliding_window_scores, window_starts
from aeroseg.prediction.classes import parse_classes
from aeroseg.prediction.outputs import ArrayWriter
from aeroseg.prediction.streaming import WindowOptions, count_windows, segment_source
from aeroseg.raster import ArraySource, RasterSource, ReadOptions
from tests.test_inference import ContextModel, PixelModel
from tests.test_predict_inputs import TRANSFORM, write_geotiff

CLASSES = "building,road,tree|forest,water"


@pytest.fixture
def model(monkeypatch):
    """The stand-in that ``aeroseg predict`` loads whatever the checkpoint."""
    standin = PixelModel()
    monkeypatch.setattr(aeroseg.registry, "segmenter", lambda request, device: standin)
    return standin


def smooth_image(height, width, seed=0):
    """uint8 3×H×W with regions of several colours (a coarse random grid, upsampled)."""
    coarse = np.random.default_rng(seed).integers(0, 256, size=(3, height // 16 + 1, width // 16 + 1))
    return np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :height, :width].astype(np.uint8)


def expected_ids(model, image, names, offset=0):
    """Class ids of the whole image in one forward pass (image 3×H×W in [0, 1])."""
    prompts = parse_classes(names)
    with torch.no_grad():
        scores = prompts.reduce(torch.sigmoid(model(torch.as_tensor(image)[None], prompts.prompts)))[0]
    return scores.argmax(0).numpy() + offset


def predict(*args, **kwargs):
    return main(
        [
            "predict",
            *args,
            "--checkpoint",
            "ckpt",
            "--window",
            "64",
            "--overlap",
            "0.25",
            *kwargs.get("extra", []),
        ]
    )


def test_geotiff_output_keeps_georeferencing_and_carries_the_classes(tmp_path, model, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(150, 170))
    out = tmp_path / "out"
    rc = predict(
        scene, "--classes", CLASSES, "-o", str(out), extra=["--scores", "--json", str(tmp_path / "s.json")]
    )
    assert rc == 0
    with rasterio.open(out / "scene.tif") as ds, rasterio.open(scene) as src:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)
        assert ds.crs.to_epsg() == 32633 and ds.transform == TRANSFORM
        assert ds.dtypes == ("uint8",) and ds.nodata == 255 and ds.profile["tiled"]
        assert ds.compression.name == "deflate"
        assert json.loads(ds.tags()["AEROSEG_CLASSES"]) == ["building", "road", "tree", "water"]
        assert ds.tags()["CLASS_2"] == "tree" and "2=tree" in ds.descriptions[0]
        colormap = ds.colormap(1)
        assert len({colormap[i] for i in range(4)}) == 4 and colormap[255][3] == 0
        ids = ds.read(1)
    with rasterio.open(out / "scene_scores.tif") as ds:
        assert ds.dtypes == ("float32",) and ds.crs.to_epsg() == 32633
        scores = ds.read(1)
    assert ids.max() <= 3 and 0 < scores.min() and scores.max() < 1
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["ok"] == 1 and summary["classes"] == ["building", "road", "tree", "water"]
    assert sum(summary["images"][0]["pixels"].values()) == 150 * 170
    assert "1 segmented" in capsys.readouterr().err


def test_a_gcp_only_geotiff_gives_outputs_with_its_gcps_and_polygons_in_their_crs(tmp_path, model, capsys):
    # 0.5 m pixels from (500000, 5600000), rotated by nothing: four corner GCPs in EPSG:25832, no transform
    corners = [(0, 0), (0, 170), (150, 0), (150, 170)]
    gcps = [GroundControlPoint(r, c, 500000 + 0.5 * c, 5600000 - 0.5 * r) for r, c in corners]
    scene = str(tmp_path / "gcp.tif")
    data = smooth_image(150, 170)
    with rasterio.open(
        scene, "w", driver="GTiff", width=170, height=150, count=3, dtype="uint8", gcps=gcps, crs="EPSG:25832"
    ) as ds:
        ds.write(data)
    out, vector = tmp_path / "out", tmp_path / "p.gpkg"
    assert (
        predict(scene, "--classes", CLASSES, "-o", str(out), extra=["--scores", "--vector", str(vector)]) == 0
    )
    assert "no CRS" not in capsys.readouterr().err
    for name in ("gcp.tif", "gcp_scores.tif"):
        with rasterio.open(out / name) as ds:
            found, crs = ds.gcps
            assert crs.to_epsg() == 25832 and ds.transform.is_identity
            assert [(g.row, g.col, g.x, g.y) for g in found] == [(g.row, g.col, g.x, g.y) for g in gcps]
    info = pyogrio.read_info(vector)
    assert info["crs"] == "EPSG:25832" and info["features"] > 0
    west, south, east, north = info["total_bounds"]
    assert (west, south, east, north) == pytest.approx((500000, 5600000 - 75, 500085, 5600000), abs=1e-6)
    _, _, _, (_, _, areas, _) = pyogrio.raw.read(vector)
    assert sum(areas) == pytest.approx(150 * 170 * 0.25)  # m², every pixel in one polygon


def test_tiled_prediction_equals_whole_image_prediction(tmp_path, model):
    image = smooth_image(200, 190, seed=1)
    scene = write_geotiff(tmp_path / "scene.tif", image)
    assert predict(scene, "--classes", CLASSES, "-o", str(tmp_path / "out"), extra=["--batch-size", "3"]) == 0
    with rasterio.open(tmp_path / "out" / "scene.tif") as ds:
        ids = ds.read(1)
    np.testing.assert_array_equal(ids, expected_ids(model, image / np.float32(255), CLASSES))


@pytest.mark.parametrize("window,overlap,stripe", [(40, 0.3, 48), (32, 0.6, 40), (40, 0.25, 4096)])
def test_streaming_by_stripes_equals_one_sliding_window_over_the_scene(window, overlap, stripe):
    """The column stripes give the whole-scene sliding window, also for a model with context, and every
    window runs once: as many encoded windows as the sliding window has."""
    model = ContextModel()
    image = smooth_image(130, 150, seed=2).transpose(1, 2, 0)
    classes = parse_classes("a,b,c")
    options = WindowOptions(window=window, overlap=overlap, batch_size=4, stripe=stripe)
    sink, runs = ArrayWriter(130, 150), []
    with ArraySource(image) as source:
        segment_source(
            model, source, classes, sink, options=options, device=torch.device("cpu"), on_windows=runs.append
        )
    encoded = model.encoded
    reference = sliding_window_scores(
        model,
        torch.from_numpy(image).permute(2, 0, 1) / 255,
        ["a", "b", "c"],
        window=window,
        overlap=overlap,
    )
    np.testing.assert_array_equal(sink.ids, reference.argmax(0).numpy())
    np.testing.assert_allclose(sink.confidence, reference.amax(0).numpy(), atol=1e-6)
    sliding = len(window_starts(130, window, overlap)) * len(window_starts(150, window, overlap))
    assert encoded == sum(runs) == count_windows(130, 150, options) == sliding


def test_uint16_four_band_input_with_bands(tmp_path, model):
    rng = np.random.default_rng(3)
    data = np.repeat(np.repeat(rng.integers(200, 4000, (4, 8, 9)), 16, 1), 16, 2)[:, :120, :140].astype(
        np.uint16
    )
    scene = write_geotiff(tmp_path / "s2.tif", data)
    assert predict(scene, "--classes", CLASSES, "-o", str(tmp_path / "out"), extra=["--bands", "3,2,1"]) == 0
    with RasterSource(scene, ReadOptions(bands=(3, 2, 1))) as source:
        image, _ = source.read(Window(0, 0, 140, 120))
    with rasterio.open(tmp_path / "out" / "s2.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), expected_ids(model, image, CLASSES))


def test_a_constant_16_bit_image_is_segmented_with_a_warning_that_it_has_no_contrast(tmp_path, model, capsys):
    flat = write_geotiff(tmp_path / "flat.tif", np.full((3, 40, 50), 1000, np.uint16))
    varied = write_geotiff(tmp_path / "varied.tif", smooth_image(40, 50).astype(np.uint16) * 200)
    assert predict(flat, varied, "--classes", CLASSES, "-o", str(tmp_path / "out"), extra=["--quiet"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "flat.tif has no contrast" in warnings[0] and "--scale" in warnings[0]
    with rasterio.open(tmp_path / "out" / "flat.tif") as ds:
        assert len(np.unique(ds.read(1))) == 1


def test_nodata_stays_nodata_and_nodata_windows_are_skipped(tmp_path, model):
    data = smooth_image(100, 260, seed=4)
    data[:, :, :130] = 0
    scene = write_geotiff(tmp_path / "edge.tif", data, nodata=0)
    assert predict(scene, "--classes", CLASSES, "-o", str(tmp_path / "out"), extra=["--scores"]) == 0
    with (
        rasterio.open(tmp_path / "out" / "edge.tif") as ds,
        rasterio.open(tmp_path / "out" / "edge_scores.tif") as sc,
    ):
        ids, scores = ds.read(1), sc.read(1)
    assert (ids[:, :130] == 255).all() and (ids[:, 130:] < 4).all()
    assert np.isnan(scores[:, :130]).all() and not np.isnan(scores[:, 130:]).any()
    assert (
        model.encoded < count_windows(100, 260, WindowOptions(window=64)) * 0.75
    )  # windows in nodata skipped


@pytest.mark.parametrize("tag", [None, float("nan")])
def test_nan_and_infinite_pixels_are_nodata_with_or_without_a_tag(tmp_path, model, tag):
    data = (smooth_image(60, 70, seed=5) / 255).astype(np.float32)
    bad = np.zeros((60, 70), dtype=bool)
    for k, value in enumerate((np.nan, np.inf, -np.inf)):
        data[k, 10 * k : 10 * k + 5, 3:9] = value  # one band of the pixel
        data[:, 40 + 5 * k : 44 + 5 * k, 50:60] = value  # every band
        bad[10 * k : 10 * k + 5, 3:9] = bad[40 + 5 * k : 44 + 5 * k, 50:60] = True
    scene = write_geotiff(tmp_path / "f.tif", data, nodata=tag)
    assert predict(scene, "--classes", CLASSES, "-o", str(tmp_path / "out"), extra=["--scores"]) == 0
    with (
        rasterio.open(tmp_path / "out" / "f.tif") as ds,
        rasterio.open(tmp_path / "out" / "f_scores.tif") as sc,
    ):
        ids, scores = ds.read(1), sc.read(1)
    assert (ids[bad] == 255).all() and (ids[~bad] < 4).all()
    assert np.isnan(scores[bad]).all() and np.isfinite(scores[~bad]).all()


def test_background_threshold_takes_id_zero(tmp_path, model):
    image = smooth_image(80, 80, seed=5)
    scene = write_geotiff(tmp_path / "scene.tif", image)
    with torch.no_grad():
        best = torch.sigmoid(
            model(torch.from_numpy(image / np.float32(255))[None], ["building", "road"])
        ).amax(1)
    threshold = f"{best.median().item():.4f}"  # half of the pixels fall below it
    extra = ["--background-threshold", threshold, "--scores"]
    assert predict(scene, "--classes", "building,road", "-o", str(tmp_path / "out"), extra=extra) == 0
    with rasterio.open(tmp_path / "out" / "scene.tif") as ds:
        ids, tags = ds.read(1), ds.tags()
    with rasterio.open(tmp_path / "out" / "scene_scores.tif") as sc:
        scores = sc.read(1)
    assert json.loads(tags["AEROSEG_CLASSES"]) == ["background", "building", "road"]
    assert tags["AEROSEG_BACKGROUND_THRESHOLD"] == threshold
    np.testing.assert_array_equal(ids == 0, scores < float(threshold))
    expected = expected_ids(model, image / np.float32(255), "building,road", offset=1)
    np.testing.assert_array_equal(ids[ids > 0], expected[ids > 0])
    assert 0.3 < (ids == 0).mean() < 0.7


def test_png_input_gives_png_outputs_with_overlay(tmp_path, model):
    image = smooth_image(70, 90, seed=6).transpose(1, 2, 0)
    Image.fromarray(image).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert (
        predict(
            str(tmp_path / "photo.png"), "--classes", CLASSES, "-o", str(out), extra=["--scores", "--overlay"]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["photo.png", "photo_overlay.png", "photo_scores.png"]
    classes_png = Image.open(out / "photo.png")
    assert classes_png.mode == "P" and classes_png.size == (90, 70)
    assert json.loads(classes_png.text["AEROSEG_CLASSES"]) == ["building", "road", "tree", "water"]
    np.testing.assert_array_equal(
        np.asarray(classes_png), expected_ids(model, image.transpose(2, 0, 1) / np.float32(255), CLASSES)
    )
    assert Image.open(out / "photo_scores.png").mode == "L"
    overlay = Image.open(out / "photo_overlay.png")
    assert overlay.size[0] > 90 and overlay.size[1] >= 70  # image plus legend


def test_folder_with_a_corrupt_file_writes_the_others_and_fails(tmp_path, model, capsys):
    folder = tmp_path / "tiles"
    folder.mkdir()
    write_geotiff(folder / "a.tif", smooth_image(60, 60, seed=7))
    (folder / "b.tif").write_bytes(b"II*\x00 this is not a tiff")
    Image.fromarray(smooth_image(50, 40).transpose(1, 2, 0)).save(folder / "c.jpg")
    out = tmp_path / "out"
    rc = predict(
        str(folder), "--classes", CLASSES, "-o", str(out), extra=["--json", str(tmp_path / "s.json")]
    )
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "c.png"]
    err = capsys.readouterr().err
    assert "b.tif" in err and "2 segmented, 0 skipped (outputs exist), 1 failed" in err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [r["status"] for r in summary["images"]] == ["ok", "failed", "ok"] and summary["failed"] == 1


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, model, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(60, 60))
    out = tmp_path / "out"
    assert predict(scene, "--classes", CLASSES, "-o", str(out), extra=["--quiet"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: no progress and no summary
    encoded = model.encoded
    assert predict(scene, "--classes", CLASSES, "-o", str(out)) == 0
    assert model.encoded == encoded and "1 skipped" in capsys.readouterr().err
    assert (
        predict(scene, "--classes", CLASSES, "-o", str(out), extra=["--scores"]) == 0
    )  # scores missing: redone
    assert model.encoded > encoded and (out / "scene_scores.tif").exists()
    encoded = model.encoded
    assert predict(scene, "--classes", CLASSES, "-o", str(out), extra=["--overwrite"]) == 0
    assert model.encoded > encoded


def test_image_smaller_than_a_window_is_padded(tmp_path, model):
    image = smooth_image(30, 45, seed=8)
    scene = write_geotiff(tmp_path / "tiny.tif", image)
    assert (
        main(["predict", scene, "--checkpoint", "c", "--classes", CLASSES, "-o", str(tmp_path / "out")]) == 0
    )
    with rasterio.open(tmp_path / "out" / "tiny.tif") as ds:
        assert ds.shape == (30, 45)
        np.testing.assert_array_equal(ds.read(1), expected_ids(model, image / np.float32(255), CLASSES))


def _bad_inputs(tmp_path):
    write_geotiff(tmp_path / "ok.tif", smooth_image(40, 40))
    write_geotiff(tmp_path / "two.tif", smooth_image(40, 40)[:2])
    (tmp_path / "corrupt.tif").write_bytes(b"\x00garbage")
    write_geotiff(
        tmp_path / "big.tif",
        smooth_image(300, 300),
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    )
    data = (tmp_path / "big.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 2])  # header fine, tiles missing


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.tif", "--classes", CLASSES], "input .*missing.tif does not exist"),
        (["corrupt.tif", "--classes", CLASSES], "cannot read .*corrupt.tif"),
        (["truncated.tif", "--classes", CLASSES], "truncated.tif: .*failed"),
        (["two.tif", "--classes", CLASSES], "two.tif has 2 colour bands, too few"),
        (
            ["two.tif", "--classes", CLASSES, "--bands", "3,2,1"],
            r"has 2 band\(s\); --bands 3,2,1 asks for band 3",
        ),
        (["ok.tif", "--classes", ""], "class list is empty"),
        (["ok.tif", "--classes", "road,tree,road"], "'road' is given twice"),
        (["ok.tif", "--classes", "road", "--vector", "x.shp"], "must end in .gpkg or .geojson"),
        (["ok.tif", "--classes", "road", "--overlap", "1"], "--overlap is a fraction"),
    ],
)
def test_errors_are_one_line_with_no_output(tmp_path, model, capsys, monkeypatch, args, message):
    _bad_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    rc = main(["predict", *args, "--checkpoint", "ckpt", "--window", "64", "-o", "out"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("aeroseg predict: error: ")
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("content", [None, {"architectures": ["CLIPModel"]}, "{not json"])
def test_a_checkpoint_that_is_not_aeroseg_is_an_error(tmp_path, capsys, content):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    checkpoint = tmp_path / "ckpt"
    if content is not None:
        checkpoint.mkdir()
        (checkpoint / "config.json").write_text(content if isinstance(content, str) else json.dumps(content))
        (checkpoint / "model.safetensors").write_bytes(b"")
    rc = main(
        ["predict", scene, "--checkpoint", str(checkpoint), "--classes", "road", "-o", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "checkpoint" in err[0] and str(checkpoint) in err[0]
    assert not (tmp_path / "out").exists()


def test_o_with_a_suffix_names_a_file_and_an_unknown_suffix_is_refused(tmp_path, model, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    rc = main(
        ["predict", scene, "--checkpoint", "c", "--classes", CLASSES, "-o", str(tmp_path / "x" / "out.jpg")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        rc == 2 and len(err) == 1 and "aeroseg writes .tif, .tiff or .png class rasters, not .jpg" in err[0]
    )
    assert not (tmp_path / "x").exists()
    folder = tmp_path / "v1.2"  # a folder name with a dot: ended by /
    assert main(["predict", scene, "--checkpoint", "c", "--classes", CLASSES, "-o", f"{folder}/"]) == 0
    assert (folder / "scene.tif").is_file()
