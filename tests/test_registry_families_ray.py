"""``aeroseg predict --ray`` with SED, SAN and SCAN official files: the workers load the model through
``registry.segmenter`` and write what one process writes, byte for byte (a local Ray cluster of 2 CPUs)."""

import json

import pytest
import rasterio

from aeroseg.cli import main
from tests.helpers import tiny_families
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("family", tiny_families.FAMILIES)
def test_predict_on_ray_equals_one_process(family, tmp_path):
    checkpoint = tiny_families.official_checkpoint(family, tmp_path / f"{family}.pth")
    config = tmp_path / "model.yaml"
    config.write_text(json.dumps({"model": tiny_families.FILE_OVERRIDES[family]}))
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(150, 170))
    common = [
        scene,
        "--checkpoint",
        str(checkpoint),
        "--config",
        str(config),
        "--classes",
        "building,road,tree",
    ]
    common += ["--window", "64", "--batch-size", "2", "--scores", "--quiet"]
    assert main(["predict", *common, "-o", str(tmp_path / "one")]) == 0
    assert main(["predict", *common, "-o", str(tmp_path / "ray"), "--ray", "--ray-threads", "1"]) == 0
    for name in ("scene.tif", "scene_scores.tif"):
        with rasterio.open(tmp_path / "one" / name) as a, rasterio.open(tmp_path / "ray" / name) as b:
            assert a.read().tobytes() == b.read().tobytes(), name
