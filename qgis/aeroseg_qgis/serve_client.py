"""A long-lived ``aeroseg serve`` process that the dock talks to: the image features it computes for a
window stay cached in it, so a second class list on the same extent runs only the class-dependent part of
the model (encode once, segment many).

The worker is ``aeroseg serve --root FOLDER --host 127.0.0.1 --port 0 --quiet ...``: a random free loopback
port, and a private temporary FOLDER (removed when the worker stops) as the only folder it may read, into
which the dock copies each segmented extent as a GeoTIFF (servers that guard their files open GeoTIFF,
PNG and JPEG only, not VRTs). Its first line gives the address, and the
token once the server has one (``aeroseg serve: MODEL on http://127.0.0.1:PORT/?token=TOKEN``); the token
goes with every request as ``Authorization: Bearer``. Requests never go through a proxy.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import runner

REQUEST_TIMEOUT = 60.0  # seconds for one API request (segmentations run in the server's worker thread)
POLL = 0.2  # seconds between two looks at a running segmentation
LISTEN_TIMEOUT = 60.0  # seconds from the server's address line to its port accepting connections
_STARTUP = re.compile(r"^aeroseg serve: .* on (?P<url>https?://\S+)")


class ServeError(Exception):
    """The worker refused a request or stopped; the message is one line."""


def parse_startup(line: str) -> tuple[str, str | None] | None:
    """The server's address (``http://HOST:PORT``) and token (None when it prints none) from its startup
    line; None for any other line."""
    match = _STARTUP.match(line.strip())
    if match is None:
        return None
    url = urlsplit(match["url"])
    return f"{url.scheme}://{url.netloc}", parse_qs(url.query).get("token", [None])[0]


class ServeWorker:
    """One ``aeroseg serve`` subprocess: start it, call its API, stop it."""

    def __init__(
        self, executable: str, arguments: Sequence[str], env: Mapping[str, str] | None = None
    ) -> None:
        self.arguments = tuple(arguments)  # the model and window options: another set needs another worker
        self.root = Path(tempfile.mkdtemp(prefix="aeroseg-qgis-"))
        self.command = [executable, "serve", "--root", str(self.root), "--host", "127.0.0.1", "--port", "0"]
        self.command += ["--quiet", *self.arguments]
        self.env = env
        self.process = None
        self.address: str | None = None
        self.token: str | None = None
        self.output: deque[str] = deque(maxlen=40)  # its last lines, for the error of a worker that stopped
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None and self.address is not None

    def start(self, *, is_canceled: Callable[[], bool]) -> None:
        """Start the server and wait for its address (the model loads first: seconds to minutes).
        :class:`runner.Cancelled` when cancelled, :class:`runner.CommandError` when it stops before."""
        try:
            self.process = runner.start(self.command, self.env)
        except OSError as error:
            raise runner.CommandError(f"cannot run {self.command[0]}: {error.strerror or error}") from None
        lines = runner.lines_of(self.process)
        while self.address is None:
            if is_canceled():
                self.stop()
                raise runner.Cancelled()
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                status = self.process.wait()
                self.stop()
                raise runner.CommandError(runner.error_line(list(self.output), status, self.command[0]))
            self.output.append(line)
            found = parse_startup(line)
            if found is not None:
                self.address, self.token = found
        threading.Thread(target=self._keep_output, args=(lines,), name="aeroseg-serve", daemon=True).start()
        self._wait_listening(is_canceled)

    def _wait_listening(self, is_canceled: Callable[[], bool]) -> None:
        """Wait until the port accepts connections: the server prints its address once the port is bound,
        which can be a moment before it listens."""
        url = urlsplit(self.address)
        end = time.monotonic() + LISTEN_TIMEOUT
        while True:
            try:
                socket.create_connection((url.hostname, url.port), timeout=1).close()
                return
            except OSError:
                if is_canceled() or self.process.poll() is not None or time.monotonic() > end:
                    break
                time.sleep(0.05)
        cancelled = is_canceled()
        self.stop()
        if cancelled:
            raise runner.Cancelled()
        raise runner.CommandError(f"the aeroseg worker does not listen on {self.address}")

    def _keep_output(self, lines: queue.Queue) -> None:
        while (line := lines.get()) is not None:
            self.output.append(line)

    def request(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer of ``method route``; :class:`ServeError` with the server's one-line error."""
        with self._call(method, route, body) as answer:
            return json.load(answer)

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None):
        if not self.running:
            last = next((line for line in reversed(self.output) if line.strip()), "")
            raise ServeError("the aeroseg worker has stopped" + (f": {last}" if last else ""))
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(self.address + route, data=data, method=method, headers=headers)
        try:
            return self._opener.open(request, timeout=REQUEST_TIMEOUT)
        except urllib.error.HTTPError as error:
            try:
                message = json.load(error).get("error")
            except (ValueError, AttributeError):
                message = None
            raise ServeError(message or f"the aeroseg worker answered HTTP {error.code} to {route}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServeError(f"the aeroseg worker does not answer: {reason}") from None

    def open(self, path: Path) -> dict[str, Any]:
        """Open an image under the worker's folder → its id, size, bands and CRS."""
        return self.request("POST", "/api/open", {"path": str(path)})

    def segment(self, raster: str, classes: str, background_threshold: float | None = None) -> dict[str, Any]:
        """Start segmenting the whole of the open image ``raster`` → the run (``id``, ``total`` windows)."""
        body = {"raster": raster, "classes": classes, "scope": "image"}
        if background_threshold is not None:
            body["background_threshold"] = background_threshold
        return self.request("POST", "/api/segment", body)

    def wait(
        self, job: str, *, is_canceled: Callable[[], bool], on_progress: Callable[[int, int], None]
    ) -> dict[str, Any]:
        """Poll run ``job`` until it is done → its final state (classes, colours, ``cache_hits``).
        :class:`runner.Cancelled` when cancelled (after :meth:`cancel`)."""
        while True:
            state = self.request("GET", f"/api/jobs/{job}")
            on_progress(int(state.get("done") or 0), int(state.get("total") or 0))
            if state["status"] == "done":
                return state
            if state["status"] not in ("queued", "running"):  # error, or cancelled on the server
                raise ServeError(state.get("error") or f"the segmentation was {state['status']}")
            if is_canceled():
                self.cancel(job)
                raise runner.Cancelled()
            time.sleep(POLL)

    def cancel(self, job: str) -> None:
        """Ask the server to stop run ``job`` (``DELETE /api/jobs/{id}``); a server without it (HTTP 405)
        finishes the run, whose result is then not taken."""
        try:
            self.request("DELETE", f"/api/jobs/{job}")
        except ServeError:
            pass

    def download(self, job: str, target: Path) -> Path:
        """The class GeoTIFF of a finished run, written to ``target`` (under a temporary name first)."""
        partial = target.with_name(f".{target.stem}.{os.getpid()}.partial{target.suffix}")
        try:
            with self._call("GET", f"/api/jobs/{job}/classes.tif") as answer, open(partial, "wb") as file:
                shutil.copyfileobj(answer, file)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def stop(self) -> None:
        """Stop the server (its cached features go with it) and remove its folder."""
        if self.process is not None:
            runner.stop(self.process)
        self.address = None
        shutil.rmtree(self.root, ignore_errors=True)
