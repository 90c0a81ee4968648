"""The parts of ``aeroseg serve``'s defences, in process: GDAL's sandbox and driver allow-list, the request
guard (token, Host, Origin), the tile cost and zoom range, least-recently-used uploads, the flags."""

import logging
import os
import re
import time

import pytest
import rasterio
from starlette.datastructures import Headers

pytest.importorskip("fastapi")

from aeroseg.cli import build_parser  # noqa: E402
from aeroseg.errors import UserError  # noqa: E402
from aeroseg.raster import RasterSource  # noqa: E402
from aeroseg.serve.formats import ALLOWED_DRIVERS, client_path, gdal_sandbox  # noqa: E402
from aeroseg.serve.limits import Limits, limits_from_args, lowest_zoom, tile_pixels  # noqa: E402
from aeroseg.serve.security import TOKEN_ENV, Guard, ScrubToken, exposure_warning, server_token  # noqa: E402
from tests.test_serve import authorised, serve, upload  # noqa: E402
from tests.test_serve_harness import Listener, geotiff_bytes, raw_vrt, source_vrt  # noqa: E402


# ------------------------------------------------------------------------------------------------- GDAL
def test_the_gdal_sandbox_keeps_every_driver_off_the_network(tmp_path):
    listener = Listener()
    vrt = tmp_path / "remote.vrt"
    vrt.write_bytes(source_vrt("/vsicurl/" + listener.url("a.tif")))
    before = {key: os.environ.get(key) for key in ("CPL_VSIL_CURL_ALLOWED_FILENAME",)}
    with gdal_sandbox():
        for path in [
            str(vrt),
            "/vsicurl/" + listener.url("b.tif"),
            "/vsicurl_streaming/" + listener.url("c"),
        ]:
            with pytest.raises(rasterio.errors.RasterioError):  # any driver, VRT included: no request
                with rasterio.open(path) as ds:
                    ds.read(1)
    time.sleep(0.3)
    assert listener.seen == []
    assert {key: os.environ.get(key) for key in before} == before
    listener.sock.close()


def test_raster_source_opens_only_the_drivers_it_is_given(tmp_path):
    (tmp_path / "scene.tif").write_bytes(geotiff_bytes(32))
    (tmp_path / "x.tif").write_bytes(source_vrt(tmp_path / "scene.tif", side=32))
    (tmp_path / "raw.png").write_bytes(raw_vrt(tmp_path / "scene.tif", side=32))
    with RasterSource(str(tmp_path / "x.tif")) as source:  # aeroseg predict: a user's own VRT opens
        assert source.driver == "VRT" and source.width == 32
    for name in ["x.tif", "raw.png"]:
        with pytest.raises(UserError, match="not a GTiff / PNG / JPEG file"):
            RasterSource(str(tmp_path / name), drivers=ALLOWED_DRIVERS)
    with RasterSource(str(tmp_path / "scene.tif"), drivers=ALLOWED_DRIVERS) as source:
        assert source.driver == "GTiff"
    (tmp_path / "broken.tif").write_bytes(b"II*\0 not a tiff")
    with pytest.raises(UserError, match="cannot read .*TIFF"):  # a GeoTIFF that is broken says so
        RasterSource(str(tmp_path / "broken.tif"), drivers=ALLOWED_DRIVERS)


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "1 to 1024"),
        ("a" * 1025, "1 to 1024"),
        ("scene\0.tif", "control characters"),
        ("line\nbreak.tif", "control characters"),
        ("/vsicurl/http://127.0.0.1/x.tif", "virtual file systems"),
        ("//VSIZIP//data.zip/x.tif", "virtual file systems"),
        ("\\vsimem\\x", "virtual file systems"),
        ("d/" + "n" * 256 + ".tif", "longer than 255 bytes"),
    ],
)
def test_client_paths_that_are_no_file_path_are_refused(name, message):
    with pytest.raises(UserError, match=message):
        client_path(name)


def test_ordinary_paths_pass():
    for name in ["scene.tif", "vsi_scene.tif", "sub/dir/a b.tif", "GTIFF_DIR:1:x.tif", "é" * 100]:
        assert client_path(name) == name


# ------------------------------------------------------------------------------------------------ guard
def request(guard, method="GET", path="/api/state", query=b"", **headers):
    headers = {"host": "127.0.0.1:8000", **{k.replace("_", "-"): v for k, v in headers.items()}}
    return guard.refusal(method, path, Headers(headers), query, 64 * 1024)


def test_the_guard_wants_this_servers_host_and_the_token():
    guard = Guard.for_address("127.0.0.1", "t" * 20)
    bearer = {"authorization": "Bearer " + "t" * 20}
    assert request(guard, **bearer) is None and request(guard, query=b"token=" + b"t" * 20) is None
    for host in ["localhost", "localhost:1", "127.0.0.1", "127.9.9.9:80", "[::1]:8000", "LOCALHOST."]:
        assert request(guard, host=host, **bearer) is None, host
    for host in ["attacker.example", "127.0.0.1.attacker.example", "[::1", "a:b:c", "10.0.0.5", ""]:
        assert request(guard, host=host, **bearer)[0] == 403, host
    assert request(guard)[0] == 401 and request(guard, authorization="Bearer x")[0] == 401
    assert request(guard, query=b"token=\xff")[0] == 401  # not ASCII: compared as bytes, refused
    assert request(guard, path="/", host="localhost") is None  # the page: no token
    assert request(guard, path="/static/app.js", host="attacker.example")[0] == 403


def test_the_guard_accepts_other_names_only_when_told():
    wide = Guard.for_address("0.0.0.0", "t" * 20, ["maps.example.org"])
    bearer = {"authorization": "Bearer " + "t" * 20}
    for host in ["10.0.0.5:8000", "[fe80::1]:8000", "maps.example.org", "MAPS.example.org:443"]:
        assert request(wide, host=host, **bearer) is None, host
    assert request(wide, host="attacker.example", **bearer)[0] == 403
    assert request(Guard.for_address("10.0.0.5", "t" * 20), host="10.0.0.6", **bearer)[0] == 403


def test_writes_come_from_this_origin_with_a_type_a_browser_cannot_send_freely():
    guard = Guard.for_address("127.0.0.1", "t" * 20)
    ok = {"authorization": "Bearer " + "t" * 20, "content_type": "application/json", "content_length": "10"}
    assert request(guard, "POST", "/api/open", **ok) is None
    assert request(guard, "POST", "/api/open", **ok, origin="http://127.0.0.1:8000") is None
    for origin in ["http://evil.example", "null", "http://127.0.0.1:8001", "https://127.0.0.1", "x"]:
        assert request(guard, "POST", "/api/open", **ok, origin=origin)[0] == 403, origin
    assert request(guard, "DELETE", "/api/jobs/x", **ok, sec_fetch_site="cross-site")[0] == 403
    assert request(guard, "POST", "/api/open", **{**ok, "content_type": "text/plain"})[0] == 415
    assert request(guard, "POST", "/api/upload", **ok)[0] == 415  # an upload is octet-stream
    assert request(guard, "POST", "/api/open", **{**ok, "content_length": "70000"})[0] == 413
    without = {k: v for k, v in ok.items() if k != "content_length"}
    assert request(guard, "POST", "/api/open", **without)[0] == 411
    proxy = Guard.for_address("127.0.0.1", "t" * 20, ["maps.example.org"])
    behind = {**ok, "host": "maps.example.org", "origin": "https://maps.example.org"}
    assert request(proxy, "POST", "/api/open", **behind) is None  # TLS proxy keeping the Host header


def test_the_token_is_fresh_unless_fixed(monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert len(server_token()) >= 40 and server_token() != server_token()
    monkeypatch.setenv(TOKEN_ENV, "a-fixed-token-for-a-proxy")
    assert server_token() == "a-fixed-token-for-a-proxy"
    monkeypatch.setenv(TOKEN_ENV, "short")
    with pytest.raises(UserError, match=TOKEN_ENV):
        server_token()


def test_binding_beyond_loopback_warns_and_the_log_hides_the_token():
    for host in ["127.0.0.1", "::1", "localhost"]:
        assert exposure_warning(host) is None
    for host in ["0.0.0.0", "::", "192.168.1.5"]:
        warning = exposure_warning(host)
        assert "other machines" in warning and "token" in warning and "TLS reverse proxy" in warning
    record = logging.LogRecord(
        "uvicorn.access", 20, "", 0, '%s - "%s %s"', ("a", "GET", "/x?token=s3&b=1"), None
    )
    ScrubToken().filter(record)
    assert "s3" not in record.getMessage() and "token=[token]&b=1" in record.getMessage()


# ------------------------------------------------------------------------------------------------ costs
def test_a_tile_costs_what_gdal_reads_at_its_overview():
    size = dict(native_zoom=18, width=40_000, height=40_000)
    assert tile_pixels(18, **size, overviews=[]) == 256**2
    assert tile_pixels(15, **size, overviews=[]) == 2048**2
    assert tile_pixels(0, **size, overviews=[]) == 40_000**2  # the whole raster at full resolution
    assert tile_pixels(15, **size, overviews=[2, 4, 8, 16]) == 256**2
    assert tile_pixels(0, **size, overviews=[2, 4, 8, 16]) == (40_000 // 16) ** 2
    limit = Limits().tile_pixels
    assert lowest_zoom(limit, floor=10, **size, overviews=[]) == 15
    assert lowest_zoom(limit, floor=10, **size, overviews=[2, 4, 8, 16, 32, 64, 128]) == 10
    small = dict(native_zoom=0, width=300, height=200, overviews=[])
    assert lowest_zoom(limit, floor=-1, **small) == -1  # a small image: down to one tile for all of it


def test_the_flags_default_to_the_limits():
    args = build_parser().parse_args(["serve", "--root", "."])
    assert limits_from_args(args) == Limits()
    assert args.allow_presets is False and args.allowed_host == []
    with pytest.raises(UserError, match="at least --max-upload-mb"):
        limits_from_args(build_parser().parse_args(["serve", "--max-upload-total-mb", "1"]))


def test_uploads_are_closed_and_deleted_least_recently_used(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scene.tif").write_bytes(geotiff_bytes(64))
    content = geotiff_bytes(128)  # 49 KiB: three fit in 0.15 MiB
    limits = ["--max-open-images", "3", "--max-upload-mb", "0.06", "--max-upload-total-mb", "0.15"]
    with serve("--root", str(tmp_path / "data"), "--checkpoint", str(tiny_checkpoint(tmp_path)), *limits) as (
        app,
        _,
    ):
        client = authorised(app)
        folder = app.state.catalog.access.upload_dir
        ids = [upload(client, f"u{i}.tif", content).json()["id"] for i in range(3)]
        assert len(list(folder.iterdir())) == 3
        assert client.get(f"/api/rasters/{ids[0]}/tiles/18/0/0.png").status_code == 200  # used again
        ids.append(upload(client, "u3.tif", content).json()["id"])  # over 0.15 MiB: u1 goes
        names = sorted(p.name.split("-")[0] for p in folder.iterdir())
        assert names == ["u0", "u2", "u3"]
        assert client.get(f"/api/rasters/{ids[1]}/tiles/18/0/0.png").status_code == 404
        assert client.post("/api/open", json={"path": "scene.tif"}).status_code == 200  # 4 open: u2 closes
        assert sorted(p.name.split("-")[0] for p in folder.iterdir()) == ["u0", "u3"]
        assert [r["name"] for r in client.get("/api/state").json()["rasters"]][-1] == "scene.tif"


def tiny_checkpoint(tmp_path):
    from tests.helpers.tiny import build_tiny_model

    path = tmp_path / "tiny"
    build_tiny_model().save_pretrained(path)
    return path


def test_finished_class_rasters_get_overviews_down_to_one_tile(tmp_path):
    from aeroseg.serve.jobs import add_overviews

    path = tmp_path / "classes.tif"
    (tmp_path / "classes.tif").write_bytes(geotiff_bytes(1100))
    assert add_overviews(path) == (2, 4)  # 550, 275 pixels; 137 would be below one tile
    with rasterio.open(path) as ds:
        assert ds.overviews(1) == [2, 4]
    (tmp_path / "small.tif").write_bytes(geotiff_bytes(300))
    assert add_overviews(tmp_path / "small.tif") == ()


def test_the_command_warns_beyond_loopback_and_prints_the_address_with_its_token(
    tmp_path, monkeypatch, capsys
):
    import uvicorn

    import aeroseg.cli.serve as command
    from aeroseg.cli import main

    (tmp_path / "scene.tif").write_bytes(geotiff_bytes(64))
    served = []
    listen = command._listen

    def serve_nothing(self, sockets):
        served.append(sockets[0].getsockname()[0])
        sockets[0].close()

    monkeypatch.setattr(uvicorn.Server, "run", serve_nothing)
    monkeypatch.setattr(command, "_listen", lambda host, port: listen("127.0.0.1", 0))  # never 0.0.0.0 here
    monkeypatch.setattr(command, "exit_soon", served.append)
    argv = ["serve", str(tmp_path / "scene.tif"), "--checkpoint", str(tiny_checkpoint(tmp_path)), "--quiet"]
    assert main([*argv, "--host", "0.0.0.0"]) == 0
    out, err = capsys.readouterr()
    assert "warning: --host 0.0.0.0 lets other machines reach this server" in err
    assert re.search(r"on http://127\.0\.0\.1:\d+/\?token=[\w-]{43} \(Ctrl\+C stops\)", out), out
    assert served == ["127.0.0.1", 0]
    assert main(argv) == 0 and "warning" not in capsys.readouterr().err
