"""The attacks of issue 20 on a real ``aeroseg serve`` process bound to 127.0.0.1: each is refused in one
line, and nothing is read (a named pipe notices any opening, a listener any connection), written (the
folders are unchanged, the upload folder empty) or left behind. Every request goes to 127.0.0.1."""

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from tests.helpers.tiny import build_tiny_model  # noqa: E402
from tests.test_predict import smooth_image  # noqa: E402
from tests.test_predict_inputs import write_geotiff  # noqa: E402
from tests.test_serve_harness import (  # noqa: E402
    Listener,
    OpenDetector,
    Server,
    geotiff_bytes,
    one_line_error,
    opened,
    raw_vrt,
    snapshot,
    source_vrt,
    tile_of,
    timed_get,
    wait_for,
    write_sparse,
)


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def land(tmp_path_factory):
    """The served folder and, beside it, the files an attacker is after (named pipes that notice a read)."""
    base = tmp_path_factory.mktemp("attack")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    write_geotiff(root / "scene.tif", smooth_image(128, 128))
    write_geotiff(root / "long.tif", smooth_image(1536, 1536, seed=1), compress="deflate")  # 1,024 windows
    write_sparse(root / "sparse.tif", 40_000, 256)
    write_sparse(root / "huge.tif", 1_000_000, 2048)
    write_geotiff(outside / "secret.tif", smooth_image(64, 64, seed=2))
    pipes = {name: OpenDetector(outside / name) for name in ("id_rsa", "source.tif", "inside-source.tif")}
    (root / "inside.tif").write_bytes(source_vrt(outside / "inside-source.tif"))
    (root / "inside_secret.tif").write_bytes(source_vrt(outside / "secret.tif"))
    checkpoint = base / "tiny"
    build_tiny_model().save_pretrained(checkpoint)
    yield {"root": root, "outside": outside, "pipes": pipes, "checkpoint": checkpoint, "base": base}
    for pipe in pipes.values():
        pipe.close()


@pytest.fixture(scope="module")
def server(land):
    argv = ["--root", str(land["root"]), "--checkpoint", str(land["checkpoint"]), "--window", "64"]
    server = Server(land["base"], *argv, "--batch-size", "1", "--max-queued-jobs", "2")
    yield server
    server.close()


@pytest.fixture
def untouched(land, server):
    """Asserts after the test that no file of the served or outside folder changed, no upload stayed and
    no named pipe was opened."""
    before = snapshot(land["root"], land["outside"])
    uploads = set((server.work / "uploads").iterdir())
    yield
    assert snapshot(land["root"], land["outside"]) == before
    assert set((server.work / "uploads").iterdir()) == uploads
    assert not [name for name, pipe in land["pipes"].items() if pipe.opened.is_set()]


# ---------------------------------------------------------------------------------- files and the network
@pytest.mark.parametrize(
    "filename, content",
    [
        ("evil.tif", lambda land: raw_vrt(land["outside"] / "id_rsa")),
        ("evil_raw.png", lambda land: raw_vrt(land["outside"] / "id_rsa")),
        ("source.tif", lambda land: source_vrt(land["outside"] / "source.tif")),
        ("outside.jpg", lambda land: source_vrt(land["outside"] / "secret.tif")),
    ],
)
def test_uploaded_vrts_are_refused_before_any_source_is_read(server, land, untouched, filename, content):
    error = one_line_error(server.upload(filename, content(land)), 400)
    assert "not a GeoTIFF, PNG or JPEG file" in error


@pytest.mark.parametrize("name", ["inside.tif", "inside_secret.tif"])
def test_a_vrt_inside_the_root_is_not_opened(server, untouched, name):
    error = one_line_error(server.post("/api/open", {"path": name}), 400)
    assert "not a GeoTIFF, PNG or JPEG file" in error
    assert name not in json.dumps(server.client.get("/api/state").json()["rasters"])


def test_no_request_leaves_the_server(server, land, untouched):
    listener = Listener()
    one_line_error(server.upload("remote.tif", source_vrt("/vsicurl/" + listener.url("x.tif"))), 400)
    one_line_error(server.upload("remote_raw.tif", raw_vrt("/vsicurl/" + listener.url("k"))), 400)
    for path in ["/vsicurl/" + listener.url("y.tif"), "/vsicurl_streaming/" + listener.url("z.tif"),
                 listener.url("w.tif"), "\\vsicurl\\" + listener.url("v.tif")]:  # fmt: skip
        one_line_error(server.post("/api/open", {"path": path}), (400, 403))
    raster = opened(server, "scene.tif")["id"]
    body = {"raster": raster, "classes": "a,b", "scope": "image", "model": "/vsicurl/" + listener.url("m")}
    one_line_error(server.post("/api/segment", body), (400, 403))
    time.sleep(0.5)
    assert listener.seen == []
    listener.sock.close()


# ---------------------------------------------------------------------------------------- who may ask
def test_a_foreign_host_is_refused(server):
    for host in ["attacker.example", f"attacker.example:{server.port}", "127.0.0.1.nip.io", ""]:
        for method, path in [("GET", "/api/state"), ("GET", "/"), ("POST", "/api/open")]:
            response = server.client.request(method, path, headers={"Host": host}, json={"path": "scene.tif"})
            assert "this server's address" in one_line_error(response, 403)
    for host in [f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"[::1]:{server.port}"]:
        assert server.client.get("/api/state", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "headers, token, status",
    [
        ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, False, 401),
        ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, True, 403),
        ({"Origin": "http://evil.example", "Content-Type": "application/octet-stream"}, True, 403),
        ({"Origin": "null", "Content-Type": "application/octet-stream"}, True, 403),
        ({"Sec-Fetch-Site": "cross-site", "Content-Type": "application/octet-stream"}, True, 403),
        ({"Content-Type": "text/plain"}, True, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, True, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, True, 415),
    ],
)
def test_cross_origin_and_simple_uploads_are_refused(server, untouched, headers, token, status):
    url = "/api/upload?filename=scene.tif" + (f"&token={server.token}" if token else "")
    response = httpx.post(server.base + url, content=geotiff_bytes(), headers=headers)
    one_line_error(response, status)


def test_same_origin_upload_is_accepted_and_a_simple_json_post_is_not(server):
    origin = {"Origin": f"http://127.0.0.1:{server.port}"}
    response = server.upload("fine.tif", geotiff_bytes(), **origin)
    assert response.status_code == 200, response.text
    simple = server.client.post(
        "/api/open", content=json.dumps({"path": "scene.tif"}), headers={"Content-Type": "text/plain"}
    )
    assert "application/json" in one_line_error(simple, 415)


def test_every_api_route_needs_the_token(server):
    raster = opened(server, "scene.tif")["id"]
    routes = [
        ("GET", "/api/state"), ("POST", "/api/open"), ("POST", "/api/upload?filename=a.tif"),
        ("GET", f"/api/rasters/{raster}/tiles/0/0/0.png"), ("POST", "/api/segment"),
        ("GET", "/api/jobs/x"), ("DELETE", "/api/jobs/x"), ("GET", "/api/jobs/x/classes.tif"),
        ("GET", "/api/jobs/x/tiles/0/0/0.png"), ("GET", "/api/jobs/x/polygons.gpkg"), ("GET", "/api/nope"),
    ]  # fmt: skip
    for method, path in routes:
        for headers in [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": "Basic x"}]:
            response = httpx.request(method, server.base + path, headers=headers, json={})
            assert "token" in one_line_error(response, 401), (method, path)
        wrong = httpx.request(method, f"{server.base}{path}{'&' if '?' in path else '?'}token=x")
        one_line_error(wrong, 401)
    assert httpx.get(f"{server.base}/api/state?token={server.token}").status_code == 200
    page = httpx.get(server.base + "/")  # the page holds no data: no token needed, its headers protect it
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"


# ---------------------------------------------------------------------------------------- what it costs
def test_a_zoom_out_tile_of_a_sparse_40000_px_geotiff_stays_cheap(server, land, untouched):
    info = opened(server, "sparse.tif")
    assert info["width"] == 40_000 and info["overviews"] == []
    assert info["min_zoom"] == info["native_zoom"] - 3  # 2048² pixels a tile: within 8 megapixels
    rss, peak = server.status("VmRSS"), server.status("VmHWM")
    times = {}
    for z in [0, 5, info["min_zoom"] - 1]:  # far below the useful zooms: an empty tile, nothing read
        response, times[z] = timed_get(server, tile_of(info, z))
        assert response.status_code == 200 and times[z] < 2, (z, times)
        assert not np.asarray(Image.open(io.BytesIO(response.content)))[..., 3].any()
    lowest, seconds = timed_get(server, tile_of(info, info["min_zoom"]))  # the page's lowest zoom
    assert lowest.status_code == 200 and seconds < 10
    print(
        f"sparse 40,000²: RSS {rss} -> {server.status('VmRSS')} MiB, peak {peak} -> "
        f"{server.status('VmHWM')} MiB; tiles {', '.join(f'z={z} {t:.2f} s' for z, t in times.items())}, "
        f"z={info['min_zoom']} (lowest zoom) {seconds:.2f} s"
    )
    assert server.status("VmRSS") - rss < 200 and server.status("VmHWM") - peak < 300
    upload = server.upload("sparse.tif", (land["root"] / "sparse.tif").read_bytes())
    assert "--max-upload-megapixels" in one_line_error(upload, 413)
    whole = {"raster": info["id"], "classes": "a,b", "scope": "image"}
    assert "--max-job-megapixels" in one_line_error(server.post("/api/segment", whole), 413)


def test_a_1000000_px_job_is_refused(server, untouched):
    info = opened(server, "huge.tif")
    assert info["width"] == 1_000_000
    jobs = set((server.work / "jobs").glob("*")) if (server.work / "jobs").exists() else set()
    south, west, north, east = info["bounds"]
    view = [south, west, south + (north - south) / 2, west + (east - west) / 2]  # a quarter: 500,000²
    for request in [{"scope": "image"}, {"scope": "view", "bounds": view}]:
        response = server.post("/api/segment", {"raster": info["id"], "classes": "a,b", **request})
        error = one_line_error(response, 413)
        assert "--max-job-megapixels" in error and "segment a smaller view" in error
    assert (set((server.work / "jobs").glob("*")) if (server.work / "jobs").exists() else set()) == jobs
    vrt = source_vrt("/nonexistent.tif", side=1_000_000)  # the issue's 327-byte VRT
    one_line_error(server.upload("million.tif", vrt), 400)


def test_a_raster_in_huge_blocks_is_refused(server, untouched, tmp_path):
    write_sparse(tmp_path / "blocks.tif", 8192, 4096)  # one 4096² block decodes 16.8 megapixels
    error = one_line_error(server.upload("blocks.tif", (tmp_path / "blocks.tif").read_bytes()), 413)
    assert "blocks of 4096×4096" in error and "TILED=YES" in error


def test_jobs_are_queued_up_to_the_limit_and_cancel_within_one_window(server):
    info = opened(server, "long.tif")
    whole = {"raster": info["id"], "classes": "building,road", "scope": "image"}
    first, second = (server.post("/api/segment", whole).json() for _ in range(2))
    assert "--max-queued-jobs" in one_line_error(server.post("/api/segment", whole), 429)
    first = wait_for(first, server, lambda j: j["done"] >= 1)
    done, at = first["done"], time.monotonic()
    first = wait_for(first, server, lambda j: j["done"] >= done + 2)
    per_window = (time.monotonic() - at) / (first["done"] - done)  # --batch-size 1: a batch is a window
    start = time.monotonic()
    cancelled = server.client.delete(f"/api/jobs/{first['id']}").json()
    seconds = time.monotonic() - start
    print(f"cancel answered in {seconds:.2f} s; a window takes {per_window:.2f} s")
    assert cancelled["status"] == "cancelled" and cancelled["done"] <= first["done"] + 2, cancelled
    assert seconds < 2 * per_window + 1 and cancelled["done"] < cancelled["total"]
    assert not (server.work / "jobs" / first["id"]).exists()
    time.sleep(1)
    assert server.client.get(f"/api/jobs/{first['id']}").json()["done"] == cancelled["done"]
    second = wait_for(second, server, lambda j: j["status"] == "running")
    queued = server.post("/api/segment", whole).json()  # the second runs: this one waits
    assert queued["status"] == "queued"
    assert server.client.delete(f"/api/jobs/{queued['id']}").json()["status"] == "cancelled"
    assert server.client.delete(f"/api/jobs/{second['id']}").json()["status"] == "cancelled"
    assert "cancelled" in one_line_error(server.client.get(f"/api/jobs/{second['id']}/classes.tif"), 404)
    assert not (server.work / "jobs" / second["id"]).exists()


def test_presets_other_than_the_servers_need_allow_presets(server):
    raster = opened(server, "scene.tif")["id"]
    body = {"raster": raster, "classes": "a,b", "scope": "image", "model": "aeroseg"}
    response = server.post("/api/segment", body)
    assert "--allow-presets" in one_line_error(response, 403)
    assert server.client.get("/api/state").json()["presets"] == []


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_answers_one_line_4xx_never_500(server):
    raster = opened(server, "scene.tif")["id"]
    tiles = f"/api/rasters/{raster}/tiles"
    body = {"raster": raster, "classes": "a,b", "scope": "view"}
    requests = [
        ("POST", "/api/open", {"path": "scene\x00.tif"}),
        ("POST", "/api/open", {"path": "a" * 5000}),
        ("POST", "/api/open", {"path": "/".join(["d" * 200] * 30)}),
        ("POST", "/api/open", {"path": "x" * 300 + ".tif"}),
        ("POST", "/api/open", {"path": ""}),
        ("POST", "/api/open", {"path": 5}),
        ("POST", "/api/open", {}),
        ("POST", "/api/segment", {**body, "bounds": [float("nan"), 0, 1, 1]}),
        ("POST", "/api/segment", {**body, "bounds": [1e308, -1e308, 1e308, 1e308]}),
        ("POST", "/api/segment", {**body, "scope": "image", "classes": "x" * 70_000}),
        ("POST", "/api/segment", {**body, "scope": "image", "classes": ",".join(map(str, range(400)))}),
        ("POST", "/api/segment", {**body, "scope": "image", "model": "m\x00"}),
        ("POST", "/api/segment", {**body, "scope": "image", "background_threshold": float("inf")}),
        ("POST", "/api/segment", {**body, "raster": "r" * 5000}),
        ("GET", f"{tiles}/-3/0/0.png", None),
        ("GET", f"{tiles}/99/0/0.png", None),
        ("GET", f"{tiles}/4/99999/0.png", None),
        ("GET", f"{tiles}/{'9' * 5000}/0/0.png", None),
        ("GET", f"{tiles}/a/b/c.png", None),
        ("GET", f"/api/rasters/{'r' * 5000}/tiles/1/1/1.png", None),
        ("GET", f"/api/jobs/{'j' * 5000}", None),
        ("GET", f"/api/jobs/x/tiles/1/1/1.png?hide={'9' * 5000}", None),
        ("POST", "/api/upload?filename=a%00.tif", b"II*\x00"),
        ("POST", f"/api/upload?filename={'n' * 5000}.tif", b"II*\x00"),
        ("POST", "/api/upload", b"II*\x00"),
    ]
    for method, path, content in requests:
        if isinstance(content, bytes):
            response = server.client.request(
                method, path, content=content, headers={"Content-Type": "application/octet-stream"}
            )
        elif content is None:
            response = server.client.request(method, path)
        else:
            text = json.dumps(content, allow_nan=True)
            response = server.client.request(
                method, path, content=text, headers={"Content-Type": "application/json"}
            )
        assert 400 <= response.status_code < 500, (method, path[:80], response.status_code, response.text)
        one_line_error(response, response.status_code)
    assert "Traceback" not in server.output and "Exception" not in server.output
