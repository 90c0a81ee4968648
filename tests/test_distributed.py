"""``aeroseg predict --ray`` on a local Ray cluster (2 CPUs, one-thread workers) started once for the module:
byte-identical outputs, lost workers, interrupted runs, bad inputs and the Python API."""

import json
import os
import threading
import time

import pytest
import rasterio

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
    """Class rasters and scores equal byte for byte, with the same georeferencing, tags and colour map."""
    for name in names:
        for suffix in ("", "_scores"):
            with (
                rasterio.open(reference / f"{name}{suffix}.tif") as a,
                rasterio.open(out / f"{name}{suffix}.tif") as b,
            ):
                assert a.read().tobytes() == b.read().tobytes(), f"{name}{suffix}"
                assert (a.crs, a.transform, a.tags(), a.block_shapes) == (
                    b.crs,
                    b.transform,
                    b.tags(),
                    b.block_shapes,
                )
                if not suffix:
                    assert a.colormap(1) == b.colormap(1)
    assert not (out / ".aeroseg-parts").exists()  # parts removed once the scenes are written


def test_folder_of_scenes_and_a_scene_in_several_units_equal_one_process(tmp_path, checkpoint):
    scenes = tmp_path / "in"
    scenes.mkdir()
    write_geotiff(scenes / "a.tif", smooth_image(150, 170))
    write_geotiff(scenes / "b.tif", smooth_image(330, 200, seed=3))
    write_geotiff(scenes / "c.tif", smooth_image(40, 50, seed=4))  # smaller than a window
    assert predict([str(scenes)], tmp_path / "one", checkpoint) == 0
    summary = tmp_path / "s.json"
    assert on_ray([str(scenes)], tmp_path / "ray", checkpoint, "--json", str(summary)) == 0
    assert_same_outputs(tmp_path / "one", tmp_path / "ray", "abc")
    assert [r["units"] for r in json.loads(summary.read_text())["images"]] == [1, 1, 1]
    assert (
        on_ray([str(scenes)], tmp_path / "bands", checkpoint, "--ray-unit-rows", "1", "--json", str(summary))
        == 0
    )
    assert_same_outputs(tmp_path / "one", tmp_path / "bands", "abc")
    images = json.loads(summary.read_text())["images"]
    assert [r["units"] for r in images] == [3, 7, 1]
    assert all(r["status"] == "ok" for r in images)


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
    parts, killed = tmp_path / "ray" / ".aeroseg-parts", []

    def kill_a_worker_once_work_is_under_way():
        deadline = time.time() + 60
        while time.time() < deadline and not any(parts.rglob("unit_*.npz")):
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

    save_part, saved = runner.save_part, []

    def save_then_stop(scene, band, arrays):
        if len(saved) == 2:
            raise KeyboardInterrupt
        save_part(scene, band, arrays)
        saved.append((scene.path, band))

    monkeypatch.setattr(runner, "save_part", save_then_stop)
    assert on_ray([str(scenes)], tmp_path / "ray", checkpoint, "--ray-unit-rows", "1") == 130  # interrupted
    assert not (tmp_path / "ray" / "b.tif").exists()  # nothing half-written under a final name
    monkeypatch.setattr(runner, "save_part", save_part)
    summary = tmp_path / "s.json"
    assert (
        on_ray([str(scenes)], tmp_path / "ray", checkpoint, "--ray-unit-rows", "1", "--json", str(summary))
        == 0
    )
    a, b = json.loads(summary.read_text())["images"]
    finished_a = a["status"] == "skipped"  # a's one unit was among the two saved: a was written
    assert b["ray"]["reused_units"] == 2 - finished_a
    assert b["units"] == 8
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
    assert (tmp_path / "ray" / "a.tif").exists() and not (tmp_path / "ray" / "b.tif").exists()
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


def test_a_ray_run_refuses_an_output_that_another_live_run_writes(tmp_path, capsys):
    scene = write_geotiff(tmp_path / "b.tif", smooth_image(40, 40))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".b.tif.lock").write_text(f"{os.getpid()}\n")  # a live run (this process) writes out/b.tif
    assert on_ray([scene], out, "ckpt") == 2
    assert f"is being written by another aeroseg predict run (pid {os.getpid()})" in capsys.readouterr().err
