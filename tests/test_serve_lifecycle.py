"""``aeroseg serve`` as a process under pressure: hundreds of uploads under a low open-file limit, a
signal in the middle of a segmentation, a model hub that does not answer. Every request goes to
127.0.0.1; the server's TMPDIR is watched so that nothing is left behind."""

import signal
import threading
import time

import pytest

from tests.helpers.tiny import build_tiny_model
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff
from tests.test_serve_harness import Server, geotiff_bytes, one_line_error, opened, tile_of, wait_for

pytest.importorskip("fastapi")

# A stand-in for a slow model hub: `aeroseg.registry.build` (what a preset loads through) waits until the test
# creates the file open-PRESET beside AEROSEG_TEST_GATE, then fails as an unreachable hub does.
SLOW_HUB = """
import os, pathlib, sys, time
import aeroseg.registry
gate = pathlib.Path(os.environ["AEROSEG_TEST_GATE"])
def slow_build(preset, **overrides):
    (gate / f"asked-{preset}").touch()
    while not (gate / f"open-{preset}").exists():
        time.sleep(0.05)
    raise OSError("the hub did not answer (stand-in)")
aeroseg.registry.build = slow_build
from aeroseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    build_tiny_model().save_pretrained(path)
    return path


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "root"
    folder.mkdir()
    write_geotiff(folder / "scene.tif", smooth_image(128, 128))
    write_geotiff(folder / "long.tif", smooth_image(1536, 1536, seed=1), compress="deflate")
    return folder


def test_300_uploads_under_a_low_open_file_limit(tmp_path, root, checkpoint):
    limit = 128
    server = Server(tmp_path, "--root", str(root), "--checkpoint", str(checkpoint), "--max-open-images", "16",
                    open_files=limit)  # fmt: skip
    try:
        baseline = server.open_files()
        first = server.upload("first.tif", geotiff_bytes(64, seed=0)).json()
        ids = []
        for i in range(300):
            response = server.upload(f"upload{i}.tif", geotiff_bytes(64, seed=i % 7))
            assert response.status_code == 200, (i, response.text)
            ids.append(response.json()["id"])
            if i % 8 == 0:  # the page keeps showing the first upload: it stays open
                assert server.client.get(tile_of(first, first["max_zoom"])).status_code == 200
        files = server.open_files()
        print(f"open files: {baseline} after start, {files} after 300 uploads (limit {limit})")
        assert files < limit and files - baseline <= 16 + 4
        uploads = list((server.work / "uploads").iterdir())
        assert len(uploads) <= 16 and any(p.name.startswith("first-") for p in uploads)
        assert opened(server, "scene.tif")["name"] == "scene.tif"  # files still open after them all
        one_line_error(server.client.get(tile_of({**first, "id": ids[0]}, first["max_zoom"])), 404)
        assert server.client.get(tile_of({**first, "id": ids[-1]}, first["max_zoom"])).status_code == 200
    finally:
        server.close()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_a_job_stops_the_server_within_seconds(tmp_path, root, checkpoint, sig, code):
    argv = ["--root", str(root), "--checkpoint", str(checkpoint), "--window", "64", "--batch-size", "1"]
    server = Server(tmp_path, *argv)
    try:
        info = opened(server, "long.tif")
        job = server.post("/api/segment", {"raster": info["id"], "classes": "a,b", "scope": "image"}).json()
        wait_for(job, server, lambda j: j["done"] >= 2)
        assert any((server.work / "jobs").rglob("*")), "the job writes into the work folder"
        exit_code, seconds = server.stop(sig, timeout=30)
        print(f"{signal.Signals(sig).name} during a job: exit {exit_code} after {seconds:.2f} s")
        assert exit_code == code and seconds < 6
        assert list(server.temp.iterdir()) == []  # the work folder, uploads and partial rasters: gone
    finally:
        server.close()


def test_a_slow_hub_delays_only_the_request_that_asked_for_it(tmp_path, root, checkpoint):
    gate = tmp_path / "gate"
    gate.mkdir()
    argv = ["--root", str(root), "--checkpoint", str(checkpoint), "--window", "64", "--allow-presets"]
    server = Server(tmp_path, *argv, code=SLOW_HUB, AEROSEG_TEST_GATE=str(gate))
    try:
        info = opened(server, "scene.tif")
        asked = {}

        def ask(preset: str) -> None:
            body = {"raster": info["id"], "classes": "a,b", "scope": "image", "model": preset}
            asked[preset] = server.post("/api/segment", body)

        slow = threading.Thread(target=ask, args=("segearth-ov",))
        slow.start()
        deadline = time.monotonic() + 60
        while not (gate / "asked-segearth-ov").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (gate / "asked-segearth-ov").exists()
        others = [
            lambda: server.client.get("/api/state"),
            lambda: server.client.get(tile_of(info, info["max_zoom"])),
            lambda: server.post("/api/open", {"path": "long.tif"}),
            lambda: server.client.get("/api/jobs/unknown"),
            lambda: server.post("/api/segment", {"raster": info["id"], "classes": "a,b", "scope": "image"}),
        ]
        for request in others:  # another client, while the hub keeps the first one waiting
            start = time.monotonic()
            response = request()
            assert response.status_code in (200, 404) and time.monotonic() - start < 5, response.text
        assert slow.is_alive()
        (gate / "open-segearth-ov").touch()
        slow.join(60)
        assert "cannot be loaded" in one_line_error(asked["segearth-ov"], 400)

        stuck = threading.Thread(target=ask, args=("segearth-ov3",), daemon=True)  # this hub never answers
        stuck.start()
        while not (gate / "asked-segearth-ov3").exists() and time.monotonic() < deadline + 60:
            time.sleep(0.05)
        exit_code, seconds = server.stop(signal.SIGTERM, timeout=60)
        print(f"SIGTERM while a download hangs: exit {exit_code} after {seconds:.2f} s")
        assert exit_code == 143 and seconds < 15
        assert list(server.temp.iterdir()) == []
    finally:
        server.close()
