"""The attacks of issue 20 on a real ``aeroseg serve`` process bound to 127.0.0.1: each is refused in one
line, and nothing is read (a named pipe notices any opening, a listener any connection), written (the
folders are unchanged, the upload folder empty) or left behind. Every request goes to 127.0.0.1."""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import Affine

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from tests.helpers.tiny import build_tiny_model  # noqa: E402
from tests.test_predict import smooth_image  # noqa: E402
from tests.test_predict_inputs import write_geotiff  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = "import sys; from aeroseg.cli import main; sys.exit(main(sys.argv[1:]))"
STARTUP_SECONDS = 300  # importing torch and loading the tiny model on a loaded two-core machine


# ------------------------------------------------------------------------------------------------ helpers
class Server:
    """A running ``aeroseg serve ARGV --port 0`` with its own TMPDIR (so its work folder can be watched),
    its output drained into :attr:`lines`, and an HTTP client that sends its token."""

    def __init__(
        self, tmp: Path, *argv: str, code: str = LAUNCH, open_files: int | None = None, **env: str
    ) -> None:
        self.temp = tmp / "server-tmp"
        self.temp.mkdir(parents=True)
        paths = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
        env = {**os.environ, "TMPDIR": str(self.temp), "PYTHONPATH": paths, **env}

        def limit() -> None:  # in the child, before Python starts
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.process = subprocess.Popen(
            [sys.executable, "-c", code, "serve", *argv, "--port", "0", "--quiet"], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=limit if open_files else None,
        )  # fmt: skip
        self.lines: list[str] = []
        ready = threading.Event()

        def drain() -> None:
            for line in self.process.stdout:
                self.lines.append(line)
                if "?token=" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(STARTUP_SECONDS) or self.process.poll() is not None:
            self.process.kill()
            raise AssertionError("aeroseg serve did not start:\n" + self.output)
        url = re.search(r"http://\S+", next(line for line in self.lines if "?token=" in line)).group(0)
        self.base, self.token = url.split("/?token=")
        self.port = int(self.base.rsplit(":", 1)[1])
        self.client = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=120
        )

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def work(self) -> Path:
        (folder,) = self.temp.glob("aeroseg-serve-*")
        return folder

    def status(self, key: str = "VmRSS") -> int:
        """A line of /proc/PID/status in MiB (VmRSS: resident memory now, VmHWM: its peak)."""
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) // 1024

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def upload(self, name: str, content: bytes, **headers: str) -> httpx.Response:
        headers = {"Content-Type": "application/octet-stream", **headers}
        return self.client.post(f"/api/upload?filename={name}", content=content, headers=headers)

    def post(self, path: str, body: dict) -> httpx.Response:
        return self.client.post(path, json=body)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, float]:
        """Send ``sig``; (exit code, seconds until the process ended)."""
        start = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        return code, time.monotonic() - start

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


class OpenDetector:
    """A named pipe that notices when anyone opens it for reading (our writer's open then returns): the
    stand-in for a secret file a raster must never reach."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path, self.opened, self._closing = path, threading.Event(), False
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens the pipe
        if not self._closing:
            self.opened.set()
        os.close(fd)

    def close(self) -> None:
        self._closing = True
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # releases our writer
        self._thread.join(10)
        os.close(fd)


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection made to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(1)
            try:
                self.seen.append(conn.recv(200))
            except OSError:
                self.seen.append(b"")
            conn.close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def raw_vrt(source: str | Path, side: int = 64) -> bytes:
    """A GDAL VRT whose band is the raw bytes of ``source`` (the issue's ``VRTRawRasterBand`` attack)."""
    return (
        f'<VRTDataset rasterXSize="{side}" rasterYSize="{side}"><VRTRasterBand dataType="Byte" band="1" '
        f'subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="0">{source}</SourceFilename>'
        f"<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>{side}</LineOffset>"
        "</VRTRasterBand></VRTDataset>"
    ).encode()


def source_vrt(source: str | Path, side: int = 64) -> bytes:
    """A GDAL VRT of ``side``² pixels drawn from another raster ``source`` (a path or /vsicurl/ URL)."""
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="0">'
        f"{source}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>"
        for b in (1, 2, 3)
    )
    return f'<VRTDataset rasterXSize="{side}" rasterYSize="{side}">{bands}</VRTDataset>'.encode()


def write_sparse(path: Path, side: int, block: int) -> Path:
    """A side² 3-band GeoTIFF of which only one block is written (a few KB: GDAL's sparse files)."""
    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32633")
    with rasterio.open(
        path, "w", **profile, transform=Affine(0.5, 0, 500000, 0, -0.5, 5600000), tiled=True,
        blockxsize=block, blockysize=block, sparse_ok=True, compress="deflate", bigtiff="YES",
    ) as ds:  # fmt: skip
        ds.write(np.full((3, block, block), 200, np.uint8), window=((0, block), (0, block)))
    return path


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folders``: path → (size, modification time)."""
    found = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() or path.is_fifo():
                stat = path.lstat()
                found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def one_line_error(response: httpx.Response, status: int | tuple[int, ...]) -> str:
    """The error of a refusal with ``status``: JSON ``{"error": one line}``."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def geotiff_bytes(side: int = 64, seed: int = 0) -> bytes:
    """A side² uint8 GeoTIFF in UTM 33N, as bytes."""
    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32633")
    with rasterio.MemoryFile() as memory:
        with memory.open(**profile, transform=Affine(0.5, 0, 500000, 0, -0.5, 5600000)) as ds:
            ds.write(smooth_image(side, side, seed=seed))
        return memory.read()


def png_bytes(side: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(smooth_image(side, side).transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def wait_for(job: dict, server: Server, until, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while not until(job) and time.monotonic() < deadline:
        time.sleep(0.05)
        job = server.client.get(f"/api/jobs/{job['id']}").json()
    assert until(job), job
    return job


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


def opened(server, name: str) -> dict:
    response = server.post("/api/open", {"path": name})
    assert response.status_code == 200, response.text
    return response.json()


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
def tile_of(info: dict, z: int) -> str:
    import morecantile

    south, west, north, east = info["bounds"]
    tile = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, z)
    return f"/api/rasters/{info['id']}/tiles/{z}/{tile.x}/{tile.y}.png"


def timed_get(server: Server, path: str) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = server.client.get(path)
    return response, time.monotonic() - start


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
