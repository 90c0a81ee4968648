"""A tiny STAC API for tests, on 127.0.0.1 only: ``python tests/helpers/stac_api.py PORT FOLDER``.

It serves the files of FOLDER (the Items' assets) and, over the Items ``FOLDER/search/*.json``, the two
routes pystac-client needs: the landing page ``/`` (STAC API - Core and Item Search conformance, a ``search``
link) and ``/search`` (GET and POST) filtering by ``collections``, ``bbox`` (intersection with the Item's bbox)
and ``datetime`` (an instant or ``START/END`` with ``..`` open ends), answering an ItemCollection with at
most ``limit`` Items. Every search is appended to ``FOLDER/searches.jsonl``. It runs in its own process:
GDAL's curl reads of the assets hold the GIL of the process that makes them.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
]


def _when(text: str | None) -> datetime | None:
    return None if text in (None, "", "..") else datetime.fromisoformat(text.replace("Z", "+00:00"))


def matches(item: dict, query: dict) -> bool:
    """Whether ``item`` passes the ``collections``, ``bbox`` and ``datetime`` filters of ``query``."""
    if query.get("collections") and item.get("collection") not in query["collections"]:
        return False
    if query.get("bbox"):
        west, south, east, north = query["bbox"]
        w, s, e, n = item["bbox"]
        if w > east or e < west or s > north or n < south:
            return False
    if query.get("datetime"):
        start, _, end = query["datetime"].partition("/")
        when = _when(item["properties"]["datetime"])
        low, high = _when(start), _when(end) if end else _when(start)
        if (low and when < low) or (high and when > high):
            return False
    return True


class Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, document: dict) -> None:
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _base(self) -> str:
        return f"http://{self.headers['Host']}"

    def _search(self, query: dict) -> None:
        root = Path(self.directory)
        with open(root / "searches.jsonl", "a") as log:
            log.write(json.dumps(query) + "\n")
        items = [json.loads(p.read_text()) for p in sorted((root / "search").glob("*.json"))]
        found = [item for item in items if matches(item, query)][: int(query.get("limit") or 100)]
        self._answer({"type": "FeatureCollection", "features": found, "links": []})

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/":
            base = self._base()
            return self._answer(
                {
                    "type": "Catalog", "id": "test-api", "stac_version": "1.0.0", "description": "test STAC API",
                    "conformsTo": CONFORMANCE,
                    "links": [
                        {"rel": "self", "href": f"{base}/", "type": "application/json"},
                        {"rel": "root", "href": f"{base}/", "type": "application/json"},
                        {"rel": "search", "href": f"{base}/search", "type": "application/geo+json", "method": "GET"},
                        {"rel": "search", "href": f"{base}/search", "type": "application/geo+json", "method": "POST"},
                    ],
                }
            )  # fmt: skip
        if url.path == "/search":
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            query = {
                "collections": params["collections"].split(",") if "collections" in params else None,
                "bbox": [float(v) for v in params["bbox"].split(",")] if "bbox" in params else None,
                "datetime": params.get("datetime"),
                "limit": params.get("limit"),
            }
            return self._search(query)
        return super().do_GET()

    def do_POST(self) -> None:
        if urlparse(self.path).path != "/search":
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length", 0))
        self._search(json.loads(self.rfile.read(length) or b"{}"))


if __name__ == "__main__":
    port, folder = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), lambda *a: Handler(*a, directory=folder))
    server.serve_forever()
