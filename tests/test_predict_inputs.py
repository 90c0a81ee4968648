"""Inputs of ``aeroseg predict``: class lists, input discovery, band choice, scaling and nodata."""

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import Affine
from rasterio.windows import Window

from aeroseg.errors import UserError
from aeroseg.prediction.classes import ClassList, make_class_list, parse_classes
from aeroseg.raster import ArraySource, RasterSource, ReadOptions, expand_inputs

TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 5600000.0)  # 0.5 m pixels


def write_geotiff(path, data, *, crs="EPSG:32633", nodata=None, **profile):
    """A GeoTIFF of ``data`` (C×H×W) at 0.5 m in ``crs``."""
    count, height, width = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=width, height=height, count=count, dtype=data.dtype, crs=crs,
        transform=TRANSFORM, nodata=nodata, **profile,
    ) as ds:  # fmt: skip
        ds.write(data)
    return str(path)


# ----------------------------------------------------------------------------------------------- classes
def test_comma_list_with_synonyms_and_background():
    classes = parse_classes(" building, road ,tree|forest|woods,water", background_threshold=0.3)
    assert classes.names == ("building", "road", "tree", "water")
    assert classes.prompts == ["building", "road", "tree", "forest", "woods", "water"]
    assert classes.ids_to_names == ["background", "building", "road", "tree", "water"]
    assert classes.offset == 1


def test_synonym_score_is_the_maximum_and_background_takes_low_scores():
    classes = parse_classes("a,b|c", background_threshold=0.5)
    probs = torch.tensor([[0.1, 0.2, 0.9], [0.6, 0.3, 0.1], [0.2, 0.1, 0.3]])  # prompts a, b, c × 3 pixels
    scores = classes.reduce(probs[None, :, :, None])[0]  # (2 classes, 3, 1)
    torch.testing.assert_close(scores[:, :, 0], torch.tensor([[0.1, 0.2, 0.9], [0.6, 0.3, 0.3]]))
    confidence, best = scores.max(dim=0)
    ids, confidence = classes.label(best, confidence, torch.tensor([[True], [True], [False]]))
    assert ids[:, 0].tolist() == [2, 0, 255]  # b wins; below 0.5 -> background 0; nodata -> 255
    assert confidence[:2, 0].tolist() == pytest.approx([0.6, 0.3]) and torch.isnan(confidence[2, 0])


def test_class_files_text_and_yaml(tmp_path):
    text = tmp_path / "classes.txt"
    text.write_text("# land cover\nbuilding\n\ntree|forest  # vegetation\n")
    assert parse_classes(file=text).synonyms == (("building",), ("tree", "forest"))
    listed = tmp_path / "list.yaml"
    listed.write_text("- building\n- [tree, forest]\n- water|lake\n")
    assert parse_classes(file=listed).synonyms == (("building",), ("tree", "forest"), ("water", "lake"))
    mapping = tmp_path / "map.yml"
    mapping.write_text("building: [house, roof]\nwater:\nroad: street\n")
    classes = parse_classes(file=mapping)
    assert classes.names == ("building", "water", "road")
    assert classes.synonyms == (("house", "roof"), ("water",), ("street",))


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "class list is empty"),
        ("building,,road", "empty name or synonym"),
        ("tree|", "empty name or synonym"),
        ("building,road,Building", "'Building' is given twice"),
        ("tree|forest,forest", "'forest' is given twice"),
    ],
)
def test_bad_class_lists_are_one_line_errors(text, message):
    with pytest.raises(UserError, match=message) as error:
        parse_classes(text)
    assert "\n" not in str(error.value)


def test_background_class_clashes_and_threshold_range():
    with pytest.raises(UserError, match="'background' is added by --background-threshold"):
        parse_classes("background,road", background_threshold=0.2)
    with pytest.raises(UserError, match=r"must be in \[0, 1\]"):
        parse_classes("road", background_threshold=1.5)
    with pytest.raises(UserError, match="at most 255 ids"):
        make_class_list([f"c{i}" for i in range(256)])
    assert isinstance(parse_classes("background,road"), ClassList)  # a plain class without the threshold


def test_bad_class_files(tmp_path):
    with pytest.raises(UserError, match="cannot read the classes file"):
        parse_classes(file=tmp_path / "missing.txt")
    bad = tmp_path / "bad.yaml"
    bad.write_text("building: [house\n")
    with pytest.raises(UserError, match="not valid YAML"):
        parse_classes(file=bad)
    bad.write_text("42\n")
    with pytest.raises(UserError, match="YAML list of classes or a mapping"):
        parse_classes(file=bad)


# ------------------------------------------------------------------------------------------------ inputs
def test_expand_inputs_files_folders_and_globs(tmp_path):
    folder = tmp_path / "tiles"
    folder.mkdir()
    for name in ("b.tif", "a.png", "c.JPG", "notes.txt", ".a.partial.tif"):
        (folder / name).write_bytes(b"x")
    assert expand_inputs([str(folder)]) == [str(folder / n) for n in ("a.png", "b.tif", "c.JPG")]
    assert expand_inputs([str(folder / "*.tif"), str(folder / "b.tif")]) == [str(folder / "b.tif")]
    assert expand_inputs(["https://example.com/scene.tif"]) == ["https://example.com/scene.tif"]
    with pytest.raises(UserError, match="does not exist"):
        expand_inputs([str(tmp_path / "missing.tif")])
    with pytest.raises(UserError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.jp2")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no image"):
        expand_inputs([str(tmp_path / "empty")])


def test_uint16_bands_are_chosen_and_scaled_by_percentiles(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 5000, size=(4, 60, 70), dtype=np.uint16)
    data[3] = 9000  # a near-infrared band that --bands leaves out
    path = write_geotiff(tmp_path / "s2.tif", data)
    with RasterSource(path, ReadOptions(bands=(3, 2, 1))) as source:
        image, valid = source.read(Window(0, 0, 70, 60))
        low, high = np.percentile(data[2], (2, 98))
        expected = np.clip((data[2] - low) / (high - low), 0, 1)
    assert image.shape == (3, 60, 70) and image.dtype == np.float32 and valid.all()
    np.testing.assert_allclose(image[0], expected, atol=1e-6)
    with RasterSource(path, ReadOptions(bands=(4,), scale=(0, 10000))) as source:
        grey, _ = source.read(Window(5, 5, 10, 10))
    np.testing.assert_allclose(grey, 0.9)  # one band is repeated as grey


def test_percentiles_come_from_a_decimated_read(tmp_path, monkeypatch):
    monkeypatch.setattr("aeroseg.raster.OVERVIEW_SIDE", 16)
    data = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64)
    path = write_geotiff(tmp_path / "ramp.tif", data)
    reads = []
    original = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        reads.append(kwargs.get("out_shape"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    with RasterSource(path) as source:
        low, high = source._ranges[0]
    assert abs(low - np.percentile(data, 2)) < 0.03 * data.max()  # close to the full-resolution percentiles
    assert abs(high - np.percentile(data, 98)) < 0.03 * data.max()
    assert reads == [(16, 16)]  # the scene itself was never read whole


def test_too_few_bands(tmp_path):
    two = write_geotiff(tmp_path / "two.tif", np.zeros((2, 20, 20), dtype=np.uint8))
    with pytest.raises(UserError, match="2 colour bands, too few"):
        RasterSource(two)
    with pytest.raises(UserError, match=r"has 2 band\(s\); --bands 3,2,1 asks for band 3"):
        RasterSource(two, ReadOptions(bands=(3, 2, 1)))
    with pytest.raises(UserError, match="one or three"):
        ReadOptions(bands=(1, 2))


def test_nodata_pixels_are_invalid(tmp_path):
    data = np.full((3, 30, 30), 120, dtype=np.uint8)
    data[:, :10] = 0
    path = write_geotiff(tmp_path / "nodata.tif", data, nodata=0)
    with RasterSource(path) as source:
        _, valid = source.read(Window(0, 0, 30, 30))
    assert not valid[:10].any() and valid[10:].all()
    with RasterSource(write_geotiff(tmp_path / "plain.tif", data), ReadOptions(nodata=120)) as source:
        _, valid = source.read(Window(0, 0, 30, 30))
    assert valid[:10].all() and not valid[10:].any()


def test_png_with_alpha_and_palette_images(tmp_path):
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[:, 15:, 3] = 255  # left half transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    with RasterSource(str(tmp_path / "rgba.png")) as source:
        image, valid = source.read(Window(0, 0, 30, 20))
    assert source.bands == (1, 2, 3) and not source.georeferenced
    assert not valid[:, :15].any() and valid[:, 15:].all()
    np.testing.assert_allclose(image[:, 0, 20], 200 / 255)
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    with RasterSource(str(tmp_path / "palette.png")) as source:
        image, _ = source.read(Window(0, 0, 2, 2))
    np.testing.assert_allclose(image[:, 0, 0], [1, 0, 0])
    np.testing.assert_allclose(image[:, 0, 1], [0, 0, 1])


def test_unreadable_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(UserError, match="cannot read .*bad.tif") as error:
        RasterSource(str(bad))
    assert "\n" not in str(error.value)


def test_array_source_scaling():
    with ArraySource(np.full((8, 9), 0.25, dtype=np.float64)) as source:
        image, valid = source.read(Window(0, 0, 9, 8))
    assert image.shape == (3, 8, 9) and valid.all()
    np.testing.assert_allclose(image, 0.25)
    with pytest.raises(UserError, match="H×W, H×W×C or C×H×W"):
        ArraySource(np.zeros((2, 3, 4, 5)))


def test_a_manifest_lists_images_relative_to_its_folder(tmp_path):
    (tmp_path / "tiles").mkdir()
    for name in ("a.tif", "b.tif"):
        write_geotiff(tmp_path / "tiles" / name, np.zeros((3, 8, 8), np.uint8))
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# tiles\ntiles/b.tif\n\n{tmp_path / 'tiles' / 'a.tif'}\nhttps://x.org/c.tif\n")
    assert expand_inputs([str(manifest)]) == [
        str(tmp_path / "tiles" / "b.tif"), str(tmp_path / "tiles" / "a.tif"), "https://x.org/c.tif"
    ]  # fmt: skip
    manifest.write_text("tiles/a.tif\ntiles/missing.tif\n")
    with pytest.raises(UserError, match=r"list.txt, line 2: tiles/missing.tif is not a file"):
        expand_inputs([str(manifest)])
