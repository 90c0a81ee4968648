"""STAC inputs on Ray: the units take :class:`aeroseg.stac.StacInput` strings as they take paths, and the
scenes come out as one process writes them: named after the Item ids, COGs recording the Item (one file
per scene with ``--ray-single-file``, else a VRT over its parts), with their STAC Items beside them."""

from __future__ import annotations

import json

import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from aeroseg.cli import main
from tests.helpers.tiny import build_tiny_model
from tests.test_stac import CLASSES, catalog  # noqa: F401 (the fixture)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """A local Ray cluster of 2 CPUs with a small object store, shut down after the module."""
    ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_an_item_collection_on_ray_equals_one_process(catalog, tmp_path):  # noqa: F811
    checkpoint = tmp_path / "tiny"
    build_tiny_model().save_pretrained(checkpoint)
    argv = [
        "predict",
        str(catalog / "items.json"),
        "--checkpoint",
        str(checkpoint),
        "--classes",
        ",".join(CLASSES),
    ]
    argv += ["--window", "64", "--asset", "data", "--scores", "--quiet"]
    assert main([*argv, "-o", str(tmp_path / "one")]) == 0
    on_ray = ["--ray", "--ray-threads", "1", "--ray-unit-rows", "1"]
    assert main([*argv, "-o", str(tmp_path / "ray"), *on_ray, "--ray-single-file"]) == 0
    assert main([*argv, "-o", str(tmp_path / "vrt"), *on_ray]) == 0
    for name in ("scene-a", "scene-b"):
        for suffix in ("", "_scores"):
            path = tmp_path / "ray" / f"{name}{suffix}.tif"
            assert cog_validate(str(path))[0]
            assert path.read_bytes() == (tmp_path / "one" / f"{name}{suffix}.tif").read_bytes()
            vrt = tmp_path / "vrt" / f"{name}{suffix}.vrt"
            with rasterio.open(tmp_path / "one" / f"{name}{suffix}.tif") as a, rasterio.open(vrt) as c:
                assert a.read().tobytes() == c.read().tobytes() and a.tags() == c.tags()
                assert c.tags()["AEROSEG_STAC_ITEM"] == name
        one, many = (json.loads((tmp_path / d / f"{name}.json").read_text()) for d in ("one", "ray"))
        assert one == many and one["id"] == f"{name}-aeroseg"
        vrt = json.loads((tmp_path / "vrt" / f"{name}.json").read_text())
        assert vrt["assets"]["classes"]["href"] == f"./{name}.vrt" and vrt["properties"] == one["properties"]
