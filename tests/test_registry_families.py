"""SED, SAN and SCAN through every entry point, from their official ``.pth`` files (the phase-1 fixtures' tiny
models in the official layout): ``aeroseg.build(preset, checkpoint=)``, ``aeroseg.load``, ``convert`` (a folder
that ``--checkpoint`` loads), ``predict``, ``evaluate`` and ``serve --checkpoint``; encode once / segment many
through predict's feature cache on a GeoTIFF; files of other models and presets of another family refused in
one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch

import aeroseg
from aeroseg import registry
from aeroseg.cli import main
from aeroseg.convert.san import load_san
from aeroseg.convert.scan import load_scan
from aeroseg.convert.sed import load_sed
from aeroseg.errors import CheckpointError
from aeroseg.prediction import predict
from aeroseg.registry import ModelRequest
from tests.helpers import tiny_families
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff
from tests.test_train import one_thread, write_dataset  # noqa: F401 (one_thread: autouse fixture)

FAMILIES = tiny_families.FAMILIES
CONVERTERS = {"sed": load_sed, "san": load_san, "scan": load_scan}
CLASSES = "building,road,tree|forest,water"
WINDOW = ["--window", "64", "--batch-size", "2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Each family's official checkpoint file, and a --config file with the overrides it runs with here."""
    root = tmp_path_factory.mktemp("official")
    out = {}
    for family in FAMILIES:
        config = root / f"{family}.yaml"
        config.write_text(json.dumps({"model": tiny_families.FILE_OVERRIDES[family]}))
        out[family] = (tiny_families.official_checkpoint(family, root / f"{family}_model_final.pth"), config)
    return out


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_geotiff(tmp_path_factory.mktemp("scene") / "scene.tif", smooth_image(90, 110))


def same_state(a, b):
    one, two = a.state_dict(), b.state_dict()
    return one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


@pytest.mark.parametrize("family", FAMILIES)
def test_build_and_load_route_an_official_file_to_its_converter(family, files):
    path, _ = files[family]
    overrides = tiny_families.FILE_OVERRIDES[family]
    converted = CONVERTERS[family](path, **overrides)
    loaded = aeroseg.load(path, **overrides)
    built = aeroseg.build(converted.config.preset, checkpoint=path, **overrides)
    cls = registry.FAMILIES[family].model_class()
    for model in (loaded, built):
        assert type(model) is cls and not model.training and same_state(model, converted)
        assert model.config == converted.config
    assert registry.family(ModelRequest(checkpoint=str(path))) is registry.FAMILIES[family]
    assert registry.window(ModelRequest(checkpoint=str(path))) == cls.window


@pytest.mark.parametrize("family", FAMILIES)
def test_a_preset_of_another_family_and_files_of_other_models_are_refused_in_one_line(
    family, files, tmp_path
):
    path, _ = files[family]
    other = "cat-seg" if family != "sed" else "san"
    with pytest.raises(
        CheckpointError, match=f"is a {registry.FAMILIES[family].paper[:3]}.* not one of preset"
    ) as e:
        aeroseg.build(other, checkpoint=path)
    assert len(str(e.value).splitlines()) == 1
    clip = tmp_path / "clip.pth"  # a file of another model: a CLIP alone
    torch.save(
        {"visual.conv1.weight": torch.zeros(8, 3, 16, 16), "token_embedding.weight": torch.zeros(4, 8)}, clip
    )
    with pytest.raises(CheckpointError) as e:
        CONVERTERS[family](clip)
    assert len(str(e.value).splitlines()) == 1 and "CLIP" in str(e.value)
    theirs = files[{"sed": "san", "san": "scan", "scan": "sed"}[family]][0]
    with pytest.raises(CheckpointError) as e:  # another family's official file
        CONVERTERS[family](theirs)
    assert len(str(e.value).splitlines()) == 1 and str(theirs) in str(e.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_convert_predict_and_evaluate_from_the_file_and_the_folder(family, files, scene, tmp_path, capsys):
    path, config = files[family]
    folder = tmp_path / f"{family}-converted"
    assert main(["convert", str(path), str(folder), "--quiet"]) == 0
    assert json.loads((folder / "config.json").read_text())["format"] == family
    assert same_state(registry.load(folder), CONVERTERS[family](path))

    outputs = {}
    for name, source in (("file", str(path)), ("folder", str(folder))):
        out = tmp_path / name
        argv = ["predict", scene, "--checkpoint", source, "--classes", CLASSES, "-o", str(out), *WINDOW]
        assert main([*argv, "--config", str(config), "--quiet"]) == 0
        with rasterio.open(out / "scene.tif") as ds:
            outputs[name] = ds.read(1)
    assert outputs["file"].shape == (90, 110) and int(outputs["file"].max()) < 4
    np.testing.assert_array_equal(outputs["file"], outputs["folder"])

    data = write_dataset(tmp_path / "data", size=48)
    report = tmp_path / "eval.json"
    argv = ["evaluate", "--data", str(data), "--checkpoint", str(path), "--config", str(config)]
    assert main([*argv, "--json", str(report), "--quiet", "--num-workers", "0"]) == 0
    scores = json.loads(report.read_text())
    assert scores["preset"] == registry.load(path).config.preset and 0 <= scores["s_miou"] <= 100
    capsys.readouterr()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_new_class_list_on_a_geotiff_reuses_the_encoded_windows(family, files, scene):
    path, _ = files[family]
    model = aeroseg.load(path, **tiny_families.FILE_OVERRIDES[family])
    encoded = []
    encode = model.encode
    model.encode = lambda images: encoded.append(len(images)) or encode(images)
    first = predict(model, scene, "building,road,tree", window=64, batch_size=2)
    windows = sum(encoded)
    second = predict(model, scene, "water,car|truck,ship", window=64, batch_size=2)
    assert windows > 0 and sum(encoded) == windows  # the second class list ran no image encoder
    again = predict(model, scene, "building,road,tree", window=64, batch_size=2)
    np.testing.assert_array_equal(again.class_map, first.class_map)
    assert second.class_names == ["water", "car", "ship"]


@pytest.mark.parametrize("family", FAMILIES)
def test_serve_runs_the_official_file(family, files, scene, tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from tests.test_serve import authorised, run, serve

    path, config = files[family]
    with serve(scene, "--checkpoint", str(path), "--config", str(config), "--window", "64") as (app, name):
        client = authorised(app)
        job = run(client, raster=client.get("/api/state").json()["rasters"][0]["id"], scope="image")
    assert name == str(path) and job["status"] == "done"
    assert sum(c["pixels"] for c in job["classes"]) == 90 * 110
