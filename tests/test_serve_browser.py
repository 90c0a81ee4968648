"""``aeroseg serve`` in a real browser: headless Chromium (the Debian package) driven by Playwright loads
the page of a real server process on a tiny model from the address it prints (with its token), segments,
changes the class list and downloads."""

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from PIL import Image

from tests.helpers.tiny import build_tiny_model
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Chromium (apt-get install chromium)"
)


@pytest.fixture
def server(tmp_path):
    """A running ``aeroseg serve`` on a tiny checkpoint and a 512² GeoTIFF; yields its URL."""
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(512, 512, seed=3))
    checkpoint = tmp_path / "tiny"
    build_tiny_model().save_pretrained(checkpoint)
    command = [sys.executable, "-m", "aeroseg", "serve", scene, "--checkpoint", str(checkpoint)]
    command += ["--port", "0", "--window", "128", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()  # the URL, once the model is loaded and the port is bound
        assert "http://127.0.0.1:" in line and "/?token=" in line, line + process.stdout.read()
        yield line.split(" on ")[1].split()[0]
    finally:
        process.terminate()
        process.wait(timeout=30)


def map_pixels(page):
    """The map area as an RGB array, and the box of the image on it (x0, y0, x1, y1)."""
    png = page.locator("#map").screenshot()
    box = page.evaluate(
        """() => { const b = state.imageLayer.options.bounds, map = state.map;
        const a = map.latLngToContainerPoint(b.getNorthWest()), c = map.latLngToContainerPoint(b.getSouthEast());
        return [a.x, a.y, c.x, c.y].map(Math.round); }"""
    )
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int), box


def segment(page, classes, previous=None):
    page.fill("#classes", classes)
    page.click("#segment")
    page.wait_for_function(
        "(old) => document.body.dataset.overlay && document.body.dataset.overlay !== old",
        arg=previous,
    )
    page.wait_for_timeout(300)  # the tiles are drawn
    return page.evaluate("() => document.body.dataset.overlay")


def changed(a, b, box):
    x0, y0, x1, y1 = (max(0, v) for v in box)
    return (np.abs(a - b).sum(-1)[y0:y1, x0:x1] > 30).mean()


def test_segment_in_the_browser_change_classes_and_download(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700}, accept_downloads=True)
            page.set_default_timeout(180_000)  # generous: CI shares two cores between two test processes
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(server)
            page.wait_for_function("() => document.body.dataset.ready && document.body.dataset.raster")
            page.wait_for_load_state("networkidle")
            assert "token" not in page.url  # kept by the page, out of the address bar
            before, box = map_pixels(page)
            assert (
                box[2] - box[0] > 100 and before[box[1] + 5 : box[3] - 5, box[0] + 5 : box[2] - 5].std() > 10
            )

            first = segment(page, "building, road, tree|forest")
            assert page.locator("#legend li .name").all_inner_texts() == ["building", "road", "tree"]
            after, _ = map_pixels(page)
            assert changed(before, after, box) > 0.5  # the overlay covers the image

            segment(page, "water, car|truck, ship, field", previous=first)
            assert page.locator("#legend li .name").all_inner_texts() == ["water", "car", "ship", "field"]
            assert "from the cache" in page.inner_text("#status")
            again, _ = map_pixels(page)
            assert changed(after, again, box) > 0.1  # other classes, other colours

            page.fill("#classes", "road,,tree")
            page.click("#segment")
            page.wait_for_selector("#error:not([hidden])")
            assert "empty name" in page.inner_text("#error")

            with page.expect_download() as download:
                page.click("#download-tif")
            path = tmp_path / "download.tif"
            download.value.save_as(path)
            with rasterio.open(path) as ds:
                assert ds.crs.to_string() == "EPSG:32633"
                assert '"water", "car", "ship", "field"' in ds.tags()["AEROSEG_CLASSES"]
            assert page.locator("#cancel").is_hidden()  # shown only while a segmentation runs
            assert not errors
        finally:
            browser.close()
