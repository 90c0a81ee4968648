"""``--ray`` and ``ray=`` without the ray extra installed: a one-line error naming the extra."""

import sys

import numpy as np
import pytest

from aeroseg.cli import main
from aeroseg.errors import UserError
from aeroseg.prediction import predict as predict_image
from tests.test_inference import PixelModel
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff


def test_ray_without_the_extra_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    args = [
        "predict",
        scene,
        "--checkpoint",
        "ckpt",
        "--classes",
        "a,b",
        "-o",
        str(tmp_path / "out"),
        "--ray",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "aeroseg[ray]"' in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match=r'pip install "aeroseg\[ray\]"'):
        predict_image(PixelModel(), scene, "a,b", ray="auto")
    with pytest.raises(UserError, match="image file or URL"):
        predict_image(PixelModel(), np.zeros((8, 8, 3), np.uint8), "a,b", ray="auto")


@pytest.mark.parametrize("flag", [["--ray-unit-rows", "2"], ["--ray-workers", "3"], ["--ray-threads", "2"]])
def test_ray_options_without_ray_are_a_one_line_error(tmp_path, capsys, flag):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    args = ["predict", scene, "--checkpoint", "ckpt", "--classes", "a,b", "-o", str(tmp_path / "out"), *flag]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag[0] in err and "--ray" in err
    assert not (tmp_path / "out").exists()
