"""The harness of the ``aeroseg serve`` process tests (``test_serve_attacks.py``,
``test_serve_lifecycle.py``); no tests of its own: a server process on 127.0.0.1 with its own TMPDIR,
detectors of a file read (a named pipe) and of a connection (a listener), and the rasters and VRTs of
the attacks."""

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
from rasterio.transform import Affine

from tests.test_predict import smooth_image

httpx = pytest.importorskip("httpx")

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


def wait_for(job: dict, server: Server, until, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while not until(job) and time.monotonic() < deadline:
        time.sleep(0.05)
        job = server.client.get(f"/api/jobs/{job['id']}").json()
    assert until(job), job
    return job


def opened(server, name: str) -> dict:
    response = server.post("/api/open", {"path": name})
    assert response.status_code == 200, response.text
    return response.json()


def tile_of(info: dict, z: int) -> str:
    import morecantile

    south, west, north, east = info["bounds"]
    tile = morecantile.tms.get("WebMercatorQuad").tile((west + east) / 2, (south + north) / 2, z)
    return f"/api/rasters/{info['id']}/tiles/{z}/{tile.x}/{tile.y}.png"


def timed_get(server: Server, path: str) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = server.client.get(path)
    return response, time.monotonic() - start
