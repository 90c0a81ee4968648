"""The driver of ``aeroseg predict --ray`` plans the scenes as the workers need them: from a manifest of
10,000 tiny files, the first scene reaches the workers before the second is planned, and a finished scene
leaves only its record of the run (no cluster: the workers' side is replaced by one that takes each
planned scene as finished, and stops after a few thousand)."""

import contextlib
import os
import tracemalloc

import pytest

import aeroseg.distributed.driver as driver
import aeroseg.distributed.runner as runner
import aeroseg.distributed.session as session
from aeroseg.cli import main
from tests.helpers.tiny import build_tiny_model
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff

pytest.importorskip("ray")

TAKEN = 2_000  # scenes taken before the run is stopped (planning 10,000 takes over a minute on 2 cores)


def test_a_manifest_of_10000_scenes_is_planned_as_the_workers_need_them(tmp_path, monkeypatch):
    checkpoint = tmp_path / "tiny"
    build_tiny_model().save_pretrained(checkpoint)
    tile = write_geotiff(tmp_path / "tile.tif", smooth_image(8, 8))
    (tmp_path / "tiles").mkdir()
    names = [f"tile_{i:05d}.tif" for i in range(10_000)]
    for name in names:
        os.link(tile, tmp_path / "tiles" / name)
    (tmp_path / "list.txt").write_text("".join(f"tiles/{name}\n" for name in names))
    plan, planned, memory = driver._plan, [], {}

    def counted(*args):
        planned.append(args[0])
        return plan(*args)

    def take_as_finished(scenes, job, model, cluster, *, quiet, on_scene):
        for taken, scene in enumerate(scenes, 1):
            assert len(planned) == taken  # planned when taken, not before
            memory[taken] = tracemalloc.get_traced_memory()[0]
            on_scene(scene)
            if taken == TAKEN:
                raise KeyboardInterrupt
        return runner.Stats()

    monkeypatch.setattr(driver, "_plan", counted)
    monkeypatch.setattr(runner, "run_units", take_as_finished)
    monkeypatch.setattr(session, "session", lambda address, verbose: contextlib.nullcontext())
    argv = ["predict", str(tmp_path / "list.txt"), "--checkpoint", str(checkpoint), "--classes", "a,b"]
    tracemalloc.start()
    try:
        assert main([*argv, "-o", str(tmp_path / "out"), "--ray", "--quiet", "--window", "16"]) == 130
    finally:
        tracemalloc.stop()
    per_scene = (memory[TAKEN] - memory[500]) / (TAKEN - 500)
    print(f"{per_scene:.0f} bytes kept per finished scene")
    assert per_scene < 2048  # its record (input, outputs, size, status, pixel counts), not its plan
