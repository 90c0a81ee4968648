"""The QGIS-free parts of the QGIS plugin (``qgis/aeroseg_qgis``): aeroseg's progress lines read back, the
executable lookup, the subprocess runner (errors, Cancel), the ``aeroseg serve`` worker client (startup
line, token, errors) against a stand-in server, the environment plan for the GPU found, pixel windows.
Its QGIS side: tests/test_qgis_plugin.py."""

from __future__ import annotations

import io
import os
import re
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aeroseg.atomic import temporary_path
from aeroseg.progress import LogProgress

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "qgis"))  # the plugin's QGIS-free modules import without QGIS

from aeroseg_qgis import environment, executable, progress, runner, serve_client, temporary  # noqa: E402
from aeroseg_qgis.window import pixel_window  # noqa: E402


def test_progress_lines_of_aeroseg_are_read_back():
    stream = io.StringIO()
    bar = LogProgress(total=480, desc="predict scene", unit="window", file=stream, interval=0)
    bar.update(120)
    bar.update(360)
    lines = stream.getvalue().splitlines()
    assert [progress.parse_progress(line).percent for line in lines] == [25.0, 100.0]
    assert progress.parse_progress(lines[0]).unit == "window"
    for other in (
        "aeroseg predict: 1 segmented, 0 skipped (outputs exist), 0 failed",
        "a: b",
        "x: 3/0 items",
    ):
        assert progress.parse_progress(other) is None


def test_executable_from_settings_then_environment_then_path(tmp_path):
    configured, variable, on_path = (_executable(tmp_path / name) for name in ("set", "env", "path"))
    environ = {executable.ENVIRONMENT_VARIABLE: variable}
    which = {"aeroseg": on_path}.get
    assert executable.find_executable(configured, environ, which) == configured
    assert executable.find_executable("", environ, which) == variable
    assert executable.find_executable(" ", {}, which) == on_path
    with pytest.raises(executable.NotInstalled, match="is not installed") as error:
        executable.find_executable("", {}, lambda name: None)
    assert "\n" not in str(error.value) and executable.ENVIRONMENT_VARIABLE in str(error.value)
    with pytest.raises(executable.NotInstalled, match=r"gone \(from the aeroseg settings\) does not exist"):
        executable.find_executable(str(tmp_path / "gone"), environ, which)
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(executable.NotInstalled, match="is not executable"):
        executable.find_executable("", {executable.ENVIRONMENT_VARIABLE: str(plain)}, which)


def _executable(path: Path, body: str = "exit 0") -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_runner_streams_lines_and_gives_aeroseg_error_line():
    script = "import sys; print('first'); print('second', file=sys.stderr); "
    script += (
        "print('aeroseg predict: error: --classes: empty name', file=sys.stderr); print('late'); sys.exit(2)"
    )
    seen = []
    with pytest.raises(runner.CommandError) as error:
        runner.run([sys.executable, "-c", script], on_line=seen.append, is_canceled=lambda: False)
    assert str(error.value) == "aeroseg predict: error: --classes: empty name"
    assert seen == ["first", "second", "aeroseg predict: error: --classes: empty name", "late"]
    with pytest.raises(runner.CommandError, match=r"failed \(exit status 3\): ValueError: boom"):
        runner.run(
            [sys.executable, "-c", "import sys; print('Traceback ...'); print('ValueError: boom'); sys.exit(3)"],
            on_line=lambda line: None, is_canceled=lambda: False,
        )  # fmt: skip
    with pytest.raises(runner.CommandError, match="cannot run /nonexistent/aeroseg"):
        runner.run(["/nonexistent/aeroseg"], on_line=print, is_canceled=lambda: False)


def test_runner_cancel_stops_the_command_and_its_children():
    script = textwrap.dedent(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        print(child.pid, flush=True)
        time.sleep(120)
        """
    )
    started, children = [], []
    with pytest.raises(runner.Cancelled):
        runner.run(
            [sys.executable, "-c", script], on_line=lambda line: children.append(int(line)),
            is_canceled=lambda: bool(children), on_start=lambda process: started.append(process.pid),
        )  # fmt: skip
    pids = started + children  # the command and its child
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has stopped; only its parent (here: init) has yet to collect it


def test_child_environment_leaves_qgis_python_gdal_and_proj_out():
    qgis = {
        "PATH": "/bin",
        "PYTHONHOME": "C:/OSGeo4W/apps/Python312",
        "PYTHONPATH": "C:/OSGeo4W/apps/qgis/python",
    }
    qgis.update(GDAL_DATA="C:/OSGeo4W/share/gdal", PROJ_LIB="C:/OSGeo4W/share/proj", HOME="/home/u")
    assert runner.child_environment(qgis) == {
        "PATH": "/bin", "HOME": "/home/u", "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8",
        "AEROSEG_PROGRESS_INTERVAL": "2",
    }  # fmt: skip


def test_serve_startup_line_with_and_without_token():
    line = "aeroseg serve: training-free on http://127.0.0.1:43121/?token=Zm9v-bar_1 (Ctrl+C stops)"
    assert serve_client.parse_startup(line) == ("http://127.0.0.1:43121", "Zm9v-bar_1")
    line = "aeroseg serve: runs/isaid/final on http://127.0.0.1:8000/ (Ctrl+C stops)"
    assert serve_client.parse_startup(line) == ("http://127.0.0.1:8000", None)
    assert serve_client.parse_startup("INFO:     Started server process [42]") is None


FAKE_SERVE = """
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
TOKEN = sys.argv[1]  # "-": prints no token and requires none, as aeroseg serve before it had tokens
SEEN = []

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, kind="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        SEEN.append([self.command, self.path, self.headers.get("Authorization")])
        if TOKEN != "-" and self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self.answer(401, {"error": "missing or wrong token"})
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        if self.path == "/api/open":
            return self.answer(200, {"id": "r1", "path": body["path"]})
        if self.path == "/api/segment":
            if "," not in body["classes"]:
                return self.answer(400, {"error": "give at least two classes"})
            return self.answer(200, {"id": "j1", "status": "queued", "done": 0, "total": 4})
        if self.path == "/api/jobs/j1":
            return self.answer(200, {"id": "j1", "status": "done", "done": 4, "total": 4, "cache_hits": 1})
        if self.path == "/api/jobs/j1/classes.tif":
            return self.answer(200, b"II*\\x00 tiff bytes", "image/tiff")
        if self.path == "/seen":
            return self.answer(200, SEEN)
        return self.answer(404, {"error": "no route " + self.path})

    do_GET = do_POST = handle_any

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
server.server_bind()  # bound, not yet listening, when the address is printed: as aeroseg serve does
query = "" if TOKEN == "-" else "?token=" + TOKEN
print("aeroseg serve: fake on http://127.0.0.1:%d/%s (Ctrl+C stops)" % (server.server_port, query), flush=True)
time.sleep(0.5)
server.server_activate()
server.serve_forever()
"""


@pytest.mark.parametrize("token", ["s3cr3t-token", "-"])
def test_serve_client_sends_the_token_of_the_startup_line(tmp_path, monkeypatch, token):
    """The worker client against a stand-in server that requires the token it printed (issue 20's
    ``aeroseg serve``), and one that prints none (before it); requests bypass any proxy."""
    script = tmp_path / "fake_serve.py"
    script.write_text(FAKE_SERVE)
    fake = _executable(tmp_path / "aeroseg", f'exec "{sys.executable}" "{script}" {token}')
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # a proxy that is not there
    worker = serve_client.ServeWorker(fake, ["--checkpoint", "ckpt"])
    assert worker.command[1:3] == ["serve", "--root"] and worker.command[-2:] == ["--checkpoint", "ckpt"]
    try:
        worker.start(is_canceled=lambda: False)
        assert worker.running and worker.token == (None if token == "-" else token)
        assert worker.open(worker.root / "cut.vrt")["id"] == "r1"
        job = worker.segment("r1", "building, road")
        progress_seen = []
        state = worker.wait(
            job["id"], is_canceled=lambda: False, on_progress=lambda *a: progress_seen.append(a)
        )
        assert state["cache_hits"] == 1 and progress_seen == [(4, 4)]
        target = worker.download("j1", tmp_path / "classes.tif")
        assert target.read_bytes() == b"II*\x00 tiff bytes" and sorted(os.listdir(tmp_path)) == [
            "aeroseg", "classes.tif", "fake_serve.py"
        ]  # fmt: skip
        with pytest.raises(serve_client.ServeError, match="^give at least two classes$"):
            worker.segment("r1", "building")
        seen = worker.request("GET", "/seen")
        assert {auth for _, _, auth in seen} == {None if token == "-" else f"Bearer {token}"}
    finally:
        worker.stop()
    assert not worker.root.exists() and worker.process.poll() is not None
    with pytest.raises(serve_client.ServeError, match="the aeroseg worker has stopped"):
        worker.open(Path("x.vrt"))


def test_serve_worker_that_fails_to_start_gives_its_error_line(tmp_path):
    fake = _executable(
        tmp_path / "aeroseg", "echo 'aeroseg serve: error: checkpoint ckpt does not exist' >&2; exit 2"
    )
    worker = serve_client.ServeWorker(fake, [])
    with pytest.raises(runner.CommandError, match="^aeroseg serve: error: checkpoint ckpt does not exist$"):
        worker.start(is_canceled=lambda: False)
    assert not worker.running and not worker.root.exists()


NVIDIA_SMI = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.124.06             Driver Version: 570.124.06     CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
"""


def test_environment_plan_picks_the_torch_build_of_the_gpu(tmp_path):
    assert environment.driver_cuda(NVIDIA_SMI) == (12, 8)
    assert environment.driver_cuda("NVIDIA-SMI has failed because it couldn't communicate") is None
    cu = "https://download.pytorch.org/whl/"
    assert environment.torch_build((12, 8), "linux")[0] == cu + "cu128"
    assert environment.torch_build((12, 9), "win32")[0] == cu + "cu128"
    assert environment.torch_build((13, 1), "linux")[0] == cu + "cu130"
    index, label = environment.torch_build((12, 2), "linux")
    assert index == cu + "cpu" and "update the NVIDIA driver" in label
    assert environment.torch_build(None, "linux") == (cu + "cpu", "CPU (no NVIDIA GPU found)")
    assert environment.torch_build(None, "win32")[0] is None  # PyPI's Windows wheels are the CPU build
    assert environment.torch_build(None, "darwin")[0] is None

    env = tmp_path / "env"
    plan = environment.setup_plan("/usr/bin/python3", env, cuda=(12, 8), platform="linux")
    python = str(env / "bin" / "python")
    assert plan.executable == env / "bin" / "aeroseg"
    assert [command for _, command in plan.steps] == [
        ["/usr/bin/python3", "-m", "venv", str(env)],
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "pip"],
        [python, "-m", "pip", "install", "--disable-pip-version-check", "torch", "--index-url", cu + "cu128"],
        [python, "-m", "pip", "install", "--disable-pip-version-check", "aeroseg[serve]"],
    ]
    windows = environment.setup_plan("py.exe", env, cuda=None, platform="win32", package="dist/aeroseg.whl")
    assert windows.executable == env / "Scripts" / "aeroseg.exe"
    assert windows.steps[2][1][-1] == "torch" and windows.steps[3][1][-1] == "dist/aeroseg.whl"
    chosen = environment.setup_plan(
        "python3", env, cuda=None, platform="linux", torch_index="https://mirror/torch"
    )
    assert chosen.steps[2][1][-2:] == ["--index-url", "https://mirror/torch"]


def test_environment_python_is_a_recent_enough_interpreter():
    versions = {"/old/python3": (3, 9), "/new/python": (3, 12), "/qgis/bin/python3": (3, 11)}
    find = {"python3": "/old/python3", "python": "/new/python"}.get
    found = environment.find_python("", which=find, prefix="/qgis", platform="linux", version=versions.get)
    assert found == "/new/python"
    nothing = environment.find_python(
        "", which=lambda n: None, prefix="/qgis", platform="linux", version=versions.get
    )
    assert nothing == "/qgis/bin/python3"  # QGIS's own
    assert environment.find_python(" /my/python ", which=find, version=versions.get) == "/my/python"
    assert environment.python_version(sys.executable) == sys.version_info[:2]
    failed = environment.failure(
        "creating the virtual environment",
        ["The virtual environment was not created successfully because ensurepip is not available."],
        "exit status 1",
    )
    assert "install python3-venv" in failed and "\n" not in failed


def test_pixel_window_of_an_extent_on_the_layer_grid():
    layer = (100.0, 0.0, 200.0, 50.0)  # 100 × 50 pixels of 1 × 1
    assert pixel_window(layer, 100, 50, layer) == (0, 0, 100, 50)
    assert pixel_window(layer, 100, 50, (110.0, 10.0, 120.0, 20.0)) == (10, 30, 10, 10)
    assert pixel_window(layer, 100, 50, (110.5, 10.2, 119.2, 20.3)) == (10, 29, 10, 11)  # outwards
    assert pixel_window(layer, 100, 50, (110.0, 10.0, 120.0, 20.0000000001)) == (
        10,
        30,
        10,
        10,
    )  # float noise
    assert pixel_window(layer, 100, 50, (50.0, -10.0, 105.0, 5.0)) == (0, 45, 5, 5)  # clipped to the layer
    assert pixel_window(layer, 100, 50, (300.0, 0.0, 400.0, 50.0)) is None


def test_the_plugin_names_its_temporary_files_as_aeroseg_does(tmp_path):
    names = {temporary.temporary_path(tmp_path / "cut.tif").name for _ in range(3)}
    assert len(names) == 3  # unique to the call, not only to the process
    same = {re.sub(r"-[0-9a-f]{8}\.", "-R.", name) for name in names}
    assert same == {re.sub(r"-[0-9a-f]{8}\.", "-R.", temporary_path(tmp_path / "cut.tif").name)}
