"""Runs of ``aeroseg predict`` that meet other runs: two at once into one folder, a run killed by SIGTERM,
the partials of dead runs, ``--overwrite`` after a run with more outputs, and reruns that name the same
weights another way."""

import json
import multiprocessing
import os
import shutil
import signal
import sys
import time

import pytest
import rasterio
import torch

import aeroseg.registry
from aeroseg.cli import main
from aeroseg.prediction.outputs import read_settings
from tests.test_inference import PixelModel
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff

CLASSES = "building,road,tree|forest,water"
FORK = multiprocessing.get_context("fork")


class SlowModel(PixelModel):
    """The per-pixel stand-in, ``delay`` seconds a forward pass (a run that takes a while)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return super().encode(images)


def predict(*args: str) -> int:
    return main(["predict", *args, "--checkpoint", "ckpt", "--window", "64", "--classes", CLASSES, "--quiet"])


def _child(delay: float, args: tuple[str, ...], log: str) -> None:
    """A forked ``aeroseg predict`` run whose stderr goes to ``log``; its exit status is predict's."""
    model = SlowModel(delay)
    aeroseg.registry.segmenter = lambda request, device: model  # this process only
    with open(log, "w") as err:
        os.dup2(err.fileno(), 2)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        code = predict(*args)
    sys.stderr.flush()
    os._exit(code)


def start(delay: float, *args: str, log) -> multiprocessing.Process:
    process = FORK.Process(target=_child, args=(delay, args, str(log)))
    process.start()
    return process


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = FORK.Process(target=os._exit, args=(0,))
    process.start()
    process.join()
    return process.pid


def partials(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name or p.name.endswith(".lock"))


def test_two_runs_into_one_folder_one_writes_the_other_refuses_in_one_line(tmp_path):
    scene = write_geotiff(tmp_path / "b.tif", smooth_image(64, 192))
    out = tmp_path / "same"
    runs = [start(1.0, scene, "-o", f"{out}/", log=tmp_path / f"{k}.log") for k in range(2)]
    for run in runs:
        run.join(60)
    codes = sorted(run.exitcode for run in runs)
    logs = [(tmp_path / f"{k}.log").read_text() for k in range(2)]
    assert codes == [0, 2], logs
    refused = logs[[run.exitcode for run in runs].index(2)]
    assert "is being written by another aeroseg predict run (pid " in refused
    assert len(refused.strip().splitlines()) == 1 and "No such file" not in refused
    with rasterio.open(out / "b.tif") as ds:
        assert ds.read(1).shape == (64, 192)
    assert partials(out) == []


def test_a_lock_of_a_dead_run_is_taken_over(tmp_path, standin):
    scene = write_geotiff(tmp_path / "b.tif", smooth_image(40, 40))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".b.tif.lock").write_text(f"{dead_pid()}\n")
    assert predict(scene, "-o", str(out)) == 0
    assert (out / "b.tif").is_file() and partials(out) == []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_removes_the_partials(tmp_path, sig, code):
    scene = write_geotiff(tmp_path / "b.tif", smooth_image(64, 64 * 12))
    out = tmp_path / "out"
    run = start(0.3, scene, "-o", str(out), "--scores", log=tmp_path / "run.log")
    deadline = time.monotonic() + 60
    while not (out.is_dir() and any(".partial" in p.name for p in out.iterdir())):
        assert time.monotonic() < deadline and run.is_alive(), (tmp_path / "run.log").read_text()
        time.sleep(0.05)
    os.kill(run.pid, sig)
    run.join(30)
    assert run.exitcode == code
    assert (tmp_path / "run.log").read_text().strip() == "aeroseg predict: interrupted"
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_rerun_removes_the_partials_of_dead_runs_only(tmp_path, standin):
    scene = write_geotiff(tmp_path / "b.tif", smooth_image(40, 40))
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".b.{dead_pid()}-0badf00d.partial.tif"
    old_style = out / ".b_scores.partial.tif"  # the name older versions gave every run
    live = out / f".c.{os.getpid()}-0badf00d.partial.tif"  # a run still going (this process)
    vector = tmp_path / "polygons"
    vector.mkdir()
    stale_vector = vector / f".p.{dead_pid()}-0badf00d.partial.gpkg"
    for path in (stale, old_style, live, stale_vector):
        path.write_bytes(b"half a file")
    assert predict(scene, "-o", str(out), "--vector", str(vector / "p.gpkg")) == 0
    assert partials(out) == [live.name] and partials(vector) == []


def test_overwrite_removes_the_side_files_it_does_not_rewrite(tmp_path, standin):
    scene = write_geotiff(tmp_path / "b.tif", smooth_image(40, 40))
    out = tmp_path / "out"
    assert predict(scene, "-o", str(out), "--scores", "--overlay") == 0
    assert sorted(p.name for p in out.iterdir()) == ["b.tif", "b_overlay.png", "b_scores.tif"]
    (out / "b.json").write_text('{"mine": 1}')  # a JSON of that name that is no STAC Item of these outputs
    argv = [
        "predict",
        scene,
        "--checkpoint",
        "ckpt",
        "--window",
        "64",
        "--classes",
        "road,water",
        "-o",
        str(out),
    ]
    assert main([*argv, "--overwrite", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["b.json", "b.tif"]


def test_a_side_file_of_another_run_is_not_taken_as_finished(tmp_path, standin):
    scene = write_geotiff(tmp_path / "b.tif", smooth_image(40, 40))
    assert predict(scene, "-o", str(tmp_path / "mine"), "--scores", "--overlay") == 0
    other = ["predict", scene, "--checkpoint", "ckpt", "--window", "64", "--classes", "road,water", "--quiet"]
    assert main([*other, "-o", str(tmp_path / "other"), "--scores", "--overlay"]) == 0
    for name in ("b_scores.tif", "b_overlay.png"):  # the other run's files under this run's names
        os.replace(tmp_path / "other" / name, tmp_path / "mine" / name)
    summary = tmp_path / "run.json"
    assert predict(scene, "-o", str(tmp_path / "mine"), "--scores", "--overlay", "--json", str(summary)) == 0
    assert json.loads(summary.read_text())["ok"] == 1  # redone, not skipped
    classes = read_settings(tmp_path / "mine" / "b.tif")
    assert classes["classes"] == CLASSES.replace("|forest", "").split(",")
    for name in ("b_scores.tif", "b_overlay.png"):
        assert read_settings(tmp_path / "mine" / name) == classes


def test_the_same_weights_under_another_path_are_the_same_model(tmp_path, standin, monkeypatch, capsys):
    scene = write_geotiff(tmp_path / "b.tif", smooth_image(40, 40))
    first = tmp_path / "models" / "run"
    first.mkdir(parents=True)
    (first / "config.json").write_text('{"format": "aeroseg"}')
    (first / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    second = tmp_path / "elsewhere" / "copy"
    shutil.copytree(first, second)  # a copy: another path, another modification time
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    args = [scene, "--window", "64", "--classes", CLASSES, "-o", str(out)]
    assert main(["predict", *args, "--checkpoint", "models/run", "--quiet"]) == 0
    monkeypatch.chdir(second.parent)
    summary = tmp_path / "run.json"
    assert main(["predict", *args, "--checkpoint", str(second), "--json", str(summary), "--quiet"]) == 0
    assert json.loads(summary.read_text())["skipped"] == 1
    (second / "model.safetensors").write_bytes(bytes(range(255, -1, -1)) * 64)  # other weights, same size
    assert main(["predict", *args, "--checkpoint", "copy", "--quiet"]) == 2
    assert "made with other model" in capsys.readouterr().err
