"""Take docs/serve.png, the README's screenshot of ``aeroseg serve``, with headless Chromium.

    PYTHONPATH=src:. python docs/make_serve_screenshot.py [OUT.png]

The page runs on the test GeoTIFF of ``aeroseg predict`` (tests/test_predict.py: ``smooth_image`` written
by ``write_geotiff``, 0.5 m pixels in UTM 33N) with a tiny random model (tests/helpers/tiny.py), so the
classes on the screenshot show the interface, not a trained model's quality.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.helpers.tiny import build_tiny_model
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scene = write_geotiff(Path(tmp) / "scene.tif", smooth_image(512, 640, seed=3))
        build_tiny_model().save_pretrained(Path(tmp) / "tiny")
        command = [sys.executable, "-m", "aeroseg", "serve", scene, "--checkpoint", f"{tmp}/tiny"]
        server = subprocess.Popen(command + ["--port", "0", "--window", "128", "--quiet"], stdout=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().split(" on ")[1].split()[0]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1200, "height": 800})
                page.goto(url)
                page.wait_for_function("() => document.body.dataset.raster")
                page.fill("#classes", "building, road, tree|forest, water")
                page.fill("#threshold", "0.3")
                page.click("#segment")
                page.wait_for_function("() => document.body.dataset.overlay", timeout=120_000)
                page.wait_for_timeout(500)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/serve.png"))
