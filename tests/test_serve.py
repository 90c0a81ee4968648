"""``aeroseg serve`` through its HTTP API, in process: tiles, segmentation equal to ``predict``, the feature
cache, downloads, and the refusals (paths outside the root, oversized uploads, bad requests)."""

import io
import time

import numpy as np
import pyogrio
import pytest
import rasterio
from PIL import Image
from rasterio.warp import transform as warp
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

pytest.importorskip("fastapi")
pytest.importorskip("rio_tiler")
pytest.importorskip("httpx")

import morecantile  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from aeroseg.cli import build_parser, main  # noqa: E402
from aeroseg.modeling.aeroseg import AerOSeg  # noqa: E402
from aeroseg.prediction import predict  # noqa: E402
from aeroseg.raster import RasterSource, ReadOptions  # noqa: E402
from aeroseg.serve.server import served_app  # noqa: E402
from tests.helpers.tiny import build_tiny_model  # noqa: E402
from tests.test_predict import smooth_image  # noqa: E402
from tests.test_predict_inputs import write_geotiff  # noqa: E402

WINDOW = ["--window", "64", "--overlap", "0.25"]
CLASSES = "building,road,tree|forest"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random AerOSeg written as a checkpoint folder."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    build_tiny_model().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return AerOSeg.from_pretrained(checkpoint).eval()


@pytest.fixture
def scene(tmp_path):
    """A 300×360 uint8 GeoTIFF in UTM 33N (the test data of ``aeroseg predict``)."""
    folder = tmp_path / "data"
    folder.mkdir()
    return write_geotiff(folder / "scene.tif", smooth_image(300, 360))


def serve(*argv):
    """The application of ``aeroseg serve ARGV`` and a client for it."""
    args = build_parser().parse_args(["serve", *argv])
    return served_app(args)


def authorised(app):
    """A client of ``app`` as the page is: this machine's address, the server's token."""
    token = app.state.guard.token
    return TestClient(
        app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False,
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip


def upload(client, filename, content):
    return client.post(
        f"/api/upload?filename={filename}", content=content,
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip


@pytest.fixture
def client(scene, checkpoint):
    with serve(scene, "--checkpoint", str(checkpoint), *WINDOW, "--max-upload-mb", "0.05") as (app, _):
        yield authorised(app)


def opened(client):
    return client.get("/api/state").json()["rasters"][0]


def run(client, **request):
    job = client.post("/api/segment", json={"classes": CLASSES, **request})
    assert job.status_code == 200, job.text
    job = job.json()
    for _ in range(600):
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "done", job
    return job


def download(client, job, tmp_path, name="classes.tif"):
    response = client.get(f"/api/jobs/{job['id']}/{name}")
    assert response.status_code == 200, response.text
    path = tmp_path / f"{job['id']}-{name}"
    path.write_bytes(response.content)
    return path


def quarter(info):
    south, west, north, east = info["bounds"]
    return [south + 0.2 * (north - south), west + 0.3 * (east - west), north - 0.1 * (north - south), east]


# ----------------------------------------------------------------------------------------------- tiles
def test_tiles_at_several_zooms_show_the_pixels_as_predict_reads_them(client, scene):
    info = opened(client)
    assert info["crs"] == "EPSG:32633" and info["georeferenced"]
    south, west, north, east = info["bounds"]
    lon, lat = west + 0.37 * (east - west), south + 0.61 * (north - south)
    tms = morecantile.tms.get("WebMercatorQuad")
    source = RasterSource(scene, ReadOptions())
    for z in range(info["min_zoom"], info["max_zoom"] + 2):
        tile = tms.tile(lon, lat, z)
        response = client.get(f"/api/rasters/{info['id']}/tiles/{z}/{tile.x}/{tile.y}.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        rgba = np.asarray(Image.open(io.BytesIO(response.content)))
        assert rgba.shape == (256, 256, 4) and rgba[..., 3].any()
        # The tile pixel at (lon, lat) has the colour predict reads there (a 16-pixel block: no edge).
        box = tms.xy_bounds(tile)
        x, y = tms.xy(lon, lat)
        col = int((x - box.left) / (box.right - box.left) * 256)
        row = int((box.top - y) / (box.top - box.bottom) * 256)
        (ex,), (ny,) = warp("EPSG:4326", "EPSG:32633", [lon], [lat])
        r, c = rasterio.transform.rowcol(source.transform, ex, ny)
        expected = source.read(Window(c, r, 1, 1))[0][:, 0, 0] * 255
        if z >= info["max_zoom"]:
            np.testing.assert_allclose(rgba[row, col, :3], expected, atol=2)
    source.close()
    outside = client.get(f"/api/rasters/{info['id']}/tiles/{info['max_zoom']}/0/0.png")
    assert (
        outside.status_code == 200 and not np.asarray(Image.open(io.BytesIO(outside.content)))[..., 3].any()
    )


# ------------------------------------------------------------------------------------------ segmentation
def test_view_and_whole_image_equal_predict_and_keep_the_georeferencing(client, scene, model, tmp_path):
    info = opened(client)
    job = run(client, raster=info["id"], scope="view", bounds=quarter(info))
    col, row, width, height = job["window"]
    assert 0 < width < 360 and 0 < height < 300
    with rasterio.open(scene) as src:
        crop = src.read(window=Window(col, row, width, height))
        crop_path = write_geotiff(tmp_path / "crop.tif", crop)
        view_transform = window_transform(Window(col, row, width, height), src.transform)
    expected = predict(model, crop_path, CLASSES, window=64, overlap=0.25).class_map
    with rasterio.open(download(client, job, tmp_path)) as ds:
        assert ds.crs.to_string() == "EPSG:32633" and ds.transform.almost_equals(view_transform)
        np.testing.assert_array_equal(ds.read(1), expected)
    assert [c["name"] for c in job["classes"]] == ["building", "road", "tree"]
    assert sum(c["pixels"] for c in job["classes"]) == width * height

    whole = run(client, raster=info["id"], scope="image")
    assert whole["window"] == [0, 0, 360, 300]
    expected = predict(model, scene, CLASSES, window=64, overlap=0.25).class_map
    with rasterio.open(download(client, whole, tmp_path)) as ds, rasterio.open(scene) as src:
        assert ds.crs == src.crs and ds.transform == src.transform
        np.testing.assert_array_equal(ds.read(1), expected)


def test_a_new_class_list_reuses_the_cached_features(client, scene, model, tmp_path, monkeypatch):
    encoded = []
    original = AerOSeg.encode
    monkeypatch.setattr(
        AerOSeg, "encode", lambda self, images: encoded.append(len(images)) or original(self, images)
    )
    info = opened(client)
    first = run(client, raster=info["id"], scope="view", bounds=quarter(info))
    windows = sum(encoded)
    assert windows == first["total"] and first["cache_hits"] == 0
    second = run(
        client, raster=info["id"], scope="view", bounds=quarter(info), classes="water,car|truck,ship"
    )
    assert sum(encoded) == windows and second["cache_hits"] > 0  # no image encoder ran
    assert first["encoded"] == windows and second["encoded"] == 0
    assert client.get("/api/state").json()["encodings"] == windows
    col, row, width, height = second["window"]
    with rasterio.open(scene) as src:
        crop_path = write_geotiff(tmp_path / "crop.tif", src.read(window=Window(col, row, width, height)))
    expected = predict(model, crop_path, "water,car|truck,ship", window=64, overlap=0.25).class_map
    with rasterio.open(download(client, second, tmp_path)) as ds:
        np.testing.assert_array_equal(ds.read(1), expected)


def test_overlay_tiles_hide_classes_and_polygons_open_in_the_input_crs(client, tmp_path):
    info = opened(client)
    job = run(client, raster=info["id"], scope="image", background_threshold=0.2)
    names = [c["name"] for c in job["classes"]]
    assert names == ["background", "building", "road", "tree"]
    tms = morecantile.tms.get("WebMercatorQuad")
    south, west, north, east = info["bounds"]
    tile = tms.tile((west + east) / 2, (south + north) / 2, info["max_zoom"])
    url = f"/api/jobs/{job['id']}/tiles/{tile.z}/{tile.x}/{tile.y}.png"
    shown = np.asarray(Image.open(io.BytesIO(client.get(url).content)))
    present = [c["id"] for c in job["classes"] if c["pixels"]]
    hidden = np.asarray(
        Image.open(io.BytesIO(client.get(f"{url}?hide={','.join(map(str, present))}").content))
    )
    assert shown[..., 3].any() and not hidden[..., 3].any()
    path = download(client, job, tmp_path, "polygons.gpkg")
    meta = pyogrio.read_info(path)
    assert meta["crs"] == "EPSG:32633" and meta["features"] > 0
    _, _, geometry, fields = pyogrio.raw.read(path, columns=["class"])
    assert len(geometry) == meta["features"] and set(fields[0]) <= set(names[1:])


# ------------------------------------------------------------------------------------------ refusals
def test_paths_outside_the_root_are_refused(client, tmp_path):
    outside = tmp_path / "secret.tif"
    write_geotiff(outside, smooth_image(40, 40))
    (tmp_path / "data" / "link.tif").symlink_to(outside)
    for path, status in [
        ("../secret.tif", 403),
        (str(outside), 403),
        ("link.tif", 403),
        ("data/../../secret.tif", 403),
        ("missing.tif", 400),
    ]:
        response = client.post("/api/open", json={"path": path})
        assert response.status_code == status, (path, response.text)
        assert set(response.json()) == {"error"} and "\n" not in response.json()["error"]
    assert client.get("/api/state").json()["files"] == ["scene.tif"]  # the symlink out is not listed


def test_uploads_are_checked_and_limited(client):
    buffer = io.BytesIO()
    Image.fromarray(smooth_image(48, 56).transpose(1, 2, 0)).save(buffer, format="PNG")
    response = upload(client, "field.png", buffer.getvalue())
    assert response.status_code == 200, response.text
    info = response.json()
    assert not info["georeferenced"] and info["bounds"] == [-48, 0, 0, 56]
    assert client.get(f"/api/rasters/{info['id']}/tiles/0/0/0.png").status_code == 200
    job = run(client, raster=info["id"], scope="view", bounds=[-30, 10, -5, 50])
    assert job["window"] == [10, 5, 40, 25]

    big = upload(client, "big.tif", b"\0" * 60_000)  # limit 0.05 MiB
    assert big.status_code == 413 and "--max-upload-mb" in big.json()["error"]
    streamed = upload(client, "big.tif", (b"\0" * 10_000 for _ in range(6)))  # chunked: no length
    assert streamed.status_code == 411
    assert upload(client, "notes.txt", b"hello").status_code == 400
    corrupt = upload(client, "broken.tif", b"II*\0 not a tiff")
    assert corrupt.status_code == 400 and "cannot read" in corrupt.json()["error"]
    uploads = client.app.state.catalog.access.upload_dir
    assert [p.suffix for p in uploads.iterdir()] == [".png"]  # refused uploads leave nothing behind


@pytest.mark.parametrize(
    "request_, status, message",
    [
        ({"classes": "a,,b"}, 400, "empty name"),
        ({"classes": "a,a"}, 400, "given twice"),
        ({"background_threshold": 3}, 400, "background-threshold"),
        ({"model": "no-such-model"}, 400, "unknown model"),
        ({"model": "../ckpt"}, 403, "'..'"),
        ({"raster": "nope"}, 400, "no open image"),
        ({"scope": "view", "bounds": [10, 10, 11, 11]}, 400, "does not overlap"),
        ({"scope": "view"}, 400, "needs its bounds"),
        ({"scope": "everything"}, 400, "scope"),
        ({"bounds": "x"}, 422, "bounds"),
    ],
)
def test_bad_requests_answer_one_line(client, request_, status, message):
    body = {"raster": opened(client)["id"], "classes": CLASSES, "scope": "image", **request_}
    response = client.post("/api/segment", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def test_unknown_jobs_and_unfinished_downloads_are_404(client):
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/api/jobs/nope/classes.tif").status_code == 404
    assert client.get("/api/rasters/nope/tiles/1/1/1.png").status_code == 404


def test_the_command_needs_images_or_a_root(capsys, tmp_path):
    assert main(["serve", "--checkpoint", str(tmp_path)]) == 2
    assert "--root" in capsys.readouterr().err
    assert main(["serve", "--root", str(tmp_path / "nope")]) == 2
    assert main(["serve", "--root", str(tmp_path), "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_feature_cache_holds_what_fits_its_memory_budget():
    import torch

    from aeroseg.serve.catalog import FeatureBudget

    class Encoder:
        calls = 0

        def encode(self, images):
            Encoder.calls += 1
            return {"feats": torch.zeros(len(images), 256, dtype=torch.float32)}  # 1 KiB a window

    model, cache = Encoder(), FeatureBudget(max_bytes=3 * 1024)
    windows = [torch.full((1, 3, 4, 4), float(i)) for i in range(5)]
    for window in windows:
        cache.features(model, window)
    assert cache.window_bytes == 1024 and cache.max_windows == 3 and cache.held_bytes == 3 * 1024
    cache.features(model, windows[4])  # still held
    cache.features(model, windows[0])  # evicted: encoded again
    assert Encoder.calls == 6 and cache.hits == 1
