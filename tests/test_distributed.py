"""``aeroseg predict --ray`` on a local Ray cluster (2 CPUs, one-thread workers) started once for the module:
the workers' files equal one process's (a scene of several units as a VRT over its parts, or one GeoTIFF
byte for byte), lost workers, interrupted runs, bad inputs and the Python API."""

import json
import os
import threading
import time
from pathlib import Path

import pyogrio.raw
import pytest
import rasterio
from PIL import Image

import aeroseg.progress
from aeroseg.cli import main
from aeroseg.prediction import predict as predict_image
from tests.helpers.tiny import build_tiny_model
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff

ray = pytest.importorskip("ray")

CLASSES = "building,road,tree|forest,water"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """A local Ray cluster of 2 CPUs with a small object store, shut down after the module."""
    ray.init(
        num_cpus=2,
        object_store_memory=80 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
        namespace="aeroseg",
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    build_tiny_model().save_pretrained(path)
    return str(path)


def predict(inputs, out, checkpoint, *extra):
    args = ["predict", *inputs, "--checkpoint", checkpoint, "--classes", CLASSES, "-o", str(out)]
    return main([*args, "--window", "64", "--batch-size", "2", "--scores", "--quiet", *extra])


def on_ray(inputs, out, checkpoint, *extra):
    return predict(inputs, out, checkpoint, "--ray", "--ray-threads", "1", *extra)


def assert_same_outputs(reference, out, names):
    """Class rasters and scores with the same pixels, georeferencing, tags and colour map; a scene written
    as one GeoTIFF equal byte for byte, one of several units a VRT over its parts."""
    for name in names:
        for suffix in ("", "_scores"):
            one = reference / f"{name}{suffix}.tif"
            written = out / f"{name}{suffix}.tif"
            if written.exists():
                assert written.read_bytes() == one.read_bytes(), f"{name}{suffix}"
            else:
                written = out / f"{name}{suffix}.vrt"
                assert (out / f"{name}.parts").is_dir()
            with rasterio.open(one) as a, rasterio.open(written) as b:
                assert a.read().tobytes() == b.read().tobytes(), f"{name}{suffix}"
                assert (a.crs, a.transform, a.tags()) == (b.crs, b.transform, b.tags())
                if not suffix:
                    assert a.colormap(1) == b.colormap(1)
        assert not list(out.glob(f"{name}.parts/*.json"))  # the records of the parts, once finished


def test_folder_of_scenes_and_a_scene_in_several_units_equal_one_process(tmp_path, checkpoint):
    scenes = tmp_path / "in"
    scenes.mkdir()
    write_geotiff(scenes / "a.tif", smooth_image(150, 170))
    write_geotiff(scenes / "b.tif", smooth_image(330, 200, seed=3))
    write_geotiff(scenes / "c.tif", smooth_image(40, 50, seed=4))  # smaller than a window
    one = ["--json", str(tmp_path / "one.json"), "--vector", str(tmp_path / "one.gpkg")]
    assert predict([str(scenes)], tmp_path / "one", checkpoint, *one) == 0
    summary = tmp_path / "s.json"
    assert on_ray([str(scenes)], tmp_path / "ray", checkpoint, "--json", str(summary)) == 0
    assert_same_outputs(tmp_path / "one", tmp_path / "ray", "abc")
    assert [r["units"] for r in json.loads(summary.read_text())["images"]] == [1, 1, 1]
    bands = ["--ray-unit-rows", "1", "--json", str(summary), "--vector", str(tmp_path / "ray.gpkg")]
    assert on_ray([str(scenes)], tmp_path / "bands", checkpoint, *bands) == 0
    a, b = (pyogrio.raw.read(tmp_path / f"{n}.gpkg") for n in ("one", "ray"))  # polygons written by workers
    assert len(a[2]) > 3 and list(a[2]) == list(b[2])
    assert all(list(x) == list(y) for x, y in zip(a[3], b[3], strict=True))
    assert_same_outputs(tmp_path / "one", tmp_path / "bands", "abc")
    images = json.loads(summary.read_text())["images"]
    assert [r["units"] for r in images] == [3, 7, 1]
    assert all(r["status"] == "ok" for r in images)
    assert [Path(r["outputs"]["classes"]).name for r in images] == ["a.vrt", "b.vrt", "c.tif"]
    assert images[1]["pixels"] == json.loads((tmp_path / "one.json").read_text())["images"][1]["pixels"]
    single = ["--ray-unit-rows", "1", "--ray-single-file"]
    assert on_ray([str(scenes)], tmp_path / "single", checkpoint, *single) == 0
    assert_same_outputs(tmp_path / "one", tmp_path / "single", "abc")
    assert not list((tmp_path / "single").glob("*.parts"))


def test_a_log_gets_plain_progress_lines_under_ray(tmp_path, checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(aeroseg.progress, "LOG_INTERVAL", 0.0)  # a line at every update
    scene = write_geotiff(tmp_path / "a.tif", smooth_image(150, 170))
    args = ["predict", scene, "--checkpoint", checkpoint, "--classes", CLASSES, "-o", str(tmp_path / "out")]
    assert main([*args, "--window", "64", "--ray", "--ray-threads", "1"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ray: ")]
    assert lines and "windows" in lines[-1] and "\r" not in "".join(lines)  # plain lines, no bar redraws


def test_a_killed_worker_has_its_units_rerun_with_identical_outputs(tmp_path, checkpoint):
    scene = write_geotiff(tmp_path / "big.tif", smooth_image(560, 300, seed=5))
    assert predict([scene], tmp_path / "one", checkpoint) == 0
    parts, killed = tmp_path / "ray" / "big.parts", []

    def kill_a_worker_once_work_is_under_way():
        deadline = time.time() + 60
        while time.time() < deadline and not any(parts.glob("rows_*.json")):
            time.sleep(0.02)
        actors = [a["name"] for a in ray.util.list_named_actors(True) if a["name"].startswith("segmenter-")]
        ray.kill(ray.get_actor(actors[0], namespace="aeroseg"), no_restart=True)
        killed.append(actors[0])

    killer = threading.Thread(target=kill_a_worker_once_work_is_under_way)
    killer.start()
    summary = tmp_path / "s.json"
    assert on_ray([scene], tmp_path / "ray", checkpoint, "--ray-unit-rows", "1", "--json", str(summary)) == 0
    killer.join()
    assert killed
    record = json.loads(summary.read_text())["images"][0]
    assert record["ray"]["retried_units"] >= 1 and record["units"] > 5
    assert_same_outputs(tmp_path / "one", tmp_path / "ray", ["big"])


def test_a_rerun_after_an_interruption_skips_finished_scenes_and_units(tmp_path, checkpoint, monkeypatch):
    scenes = tmp_path / "in"
    scenes.mkdir()
    write_geotiff(scenes / "a.tif", smooth_image(60, 120, seed=6))  # one unit
    write_geotiff(scenes / "b.tif", smooth_image(400, 150, seed=7))
    assert predict([str(scenes)], tmp_path / "one", checkpoint) == 0
    from aeroseg.distributed import runner

    postfix, results = runner._postfix, []

    def stop_after_two_units(stats):  # the driver notes each unit's result: stopped after the second
        results.append(stats.units)
        if len(results) == 2:
            raise KeyboardInterrupt
        return postfix(stats)

    monkeypatch.setattr(runner, "_postfix", stop_after_two_units)
    assert on_ray([str(scenes)], tmp_path / "ray", checkpoint, "--ray-unit-rows", "1") == 130  # interrupted
    assert not (tmp_path / "ray" / "b.vrt").exists()  # nothing half-written under a final name
    monkeypatch.setattr(runner, "_postfix", postfix)
    time.sleep(2)  # the units in flight when the driver stopped end on their workers
    summary = tmp_path / "s.json"
    assert (
        on_ray([str(scenes)], tmp_path / "ray", checkpoint, "--ray-unit-rows", "1", "--json", str(summary))
        == 0
    )
    a, b = json.loads(summary.read_text())["images"]
    assert b["ray"]["reused_units"] >= 1 and b["units"] == 8
    assert_same_outputs(tmp_path / "one", tmp_path / "ray", "ab")


def test_a_bad_file_fails_its_unit_in_one_line_and_the_others_finish(tmp_path, checkpoint, capsys):
    scenes = tmp_path / "in"
    scenes.mkdir()
    write_geotiff(scenes / "a.tif", smooth_image(100, 120, seed=8))
    bad = write_geotiff(
        scenes / "b.tif", smooth_image(200, 200), tiled=True, blockxsize=64, blockysize=64, compress="deflate"
    )
    with rasterio.open(bad) as ds:  # a tile of pixels corrupted: the file opens, its pixels do not read
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    with open(bad, "r+b") as file:
        file.seek(offset)
        file.write(b"\xff" * size)
    (scenes / "c.tif").write_bytes(b"not a tiff")
    capsys.readouterr()
    assert on_ray([str(scenes)], tmp_path / "ray", checkpoint, "--ray-unit-rows", "1") == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "skipped:" in line]
    assert len(lines) == 2 and "b.tif" in lines[0] + lines[1] and "c.tif" in lines[0] + lines[1]
    assert "Traceback" not in err
    assert (tmp_path / "ray" / "a.vrt").exists() and not (tmp_path / "ray" / "b.vrt").exists()
    assert not list((tmp_path / "ray").glob(".*partial*"))


def test_python_api_on_ray_equals_one_process(tmp_path):
    model = build_tiny_model().eval()
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(150, 130, seed=9))
    kwargs = dict(window=64, batch_size=2, scores=True)
    (tmp_path / "one").mkdir()
    (tmp_path / "ray").mkdir()
    here = predict_image(model, scene, CLASSES, tmp_path / "one" / "scene.tif", **kwargs)
    there = predict_image(model, scene, CLASSES, tmp_path / "ray" / "scene.tif", ray="auto", **kwargs)
    assert here.class_map.tobytes() == there.class_map.tobytes()
    assert here.scores.tobytes() == there.scores.tobytes()
    assert_same_outputs(tmp_path / "one", tmp_path / "ray", ["scene"])
    photo = tmp_path / "photo.png"  # a plain picture: PNG outputs, written from the arrays
    Image.fromarray(smooth_image(70, 90, seed=2).transpose(1, 2, 0)).save(photo)
    here = predict_image(model, photo, CLASSES, tmp_path / "one" / "photo.png", **kwargs)
    there = predict_image(model, photo, CLASSES, tmp_path / "ray" / "photo.png", ray="auto", **kwargs)
    assert here.class_map.tobytes() == there.class_map.tobytes()
    for name in ("photo.png", "photo_scores.png"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes()


def test_a_ray_run_refuses_an_output_that_another_live_run_writes(tmp_path, capsys):
    scene = write_geotiff(tmp_path / "b.tif", smooth_image(40, 40))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".b.tif.lock").write_text(f"{os.getpid()}\n")  # a live run (this process) writes out/b.tif
    assert on_ray([scene], out, "ckpt") == 2
    assert f"is being written by another aeroseg predict run (pid {os.getpid()})" in capsys.readouterr().err
