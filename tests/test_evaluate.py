import json
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
import yaml
from PIL import Image
from rasterio.windows import Window
from torch import nn

from aeroseg import AerOSeg
from aeroseg.cli import evaluate as command
from aeroseg.cli import main
from aeroseg.data import SegmentationDataset
from aeroseg.inference import reference_scores
from aeroseg.metrics import ConfusionMatrix
from aeroseg.prediction.classes import make_class_list
from aeroseg.prediction.outputs import GeoTiffWriter
from aeroseg.registry import checkpoint_folder
from tests.helpers.standins import LogitStandIn
from tests.helpers.tiny import build_tiny_model

CLASSES = ["a", "b", "c", "d", "e"]
UNSEEN = ["c", "d", "e"]  # "e" never occurs: its IoU is undefined (null) and left out of the means
# stem -> (mask, prediction); 255 = ignore. Two 2x4 images (one batch) and a 3x3 one (a second batch).
SAMPLES = {
    "img0": ([[0, 0, 1, 1], [2, 2, 255, 3]], [[0, 1, 1, 1], [2, 0, 3, 3]]),
    "img1": ([[1, 1, 1, 255], [0, 0, 2, 2]], [[1, 1, 2, 0], [0, 0, 2, 2]]),
    "img2": ([[3, 3, 3], [3, 3, 3], [255, 255, 255]], [[3, 3, 3], [3, 0, 0], [1, 1, 1]]),
}
# Confusion matrix by hand (rows: truth a..d, columns: prediction a..d; e is all zero):
#   a: [3, 1, 0, 0]   b: [0, 4, 1, 0]   c: [1, 0, 3, 0]   d: [2, 0, 0, 5]
# column sums 6, 5, 4, 5 -> IoU = TP / (row + column - TP)
IOU = {"a": Fraction(3, 7), "b": Fraction(4, 6), "c": Fraction(3, 5), "d": Fraction(5, 7)}
S_MIOU = float((IOU["a"] + IOU["b"]) / 2 * 100)
U_MIOU = float((IOU["c"] + IOU["d"]) / 2 * 100)
MIOU = float(sum(IOU.values()) / 4 * 100)
STEP = 50  # the stand-in model reads the predicted class from the red channel: red = class * STEP


def make_dataset(root: Path) -> Path:
    """A canonical dataset whose images encode the prediction of :class:`PixelModel`."""
    root.mkdir(parents=True, exist_ok=True)
    info = {"name": "toy", "classes": CLASSES, "unseen": UNSEEN, "ignore_index": 255}
    (root / "dataset.yaml").write_text(yaml.safe_dump(info))
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
    for stem, (mask, pred) in SAMPLES.items():
        rgb = np.zeros((*np.shape(mask), 3), np.uint8)
        rgb[..., 0] = np.array(pred) * STEP
        rgb[..., 1] = 77
        Image.fromarray(rgb).save(root / "val" / "images" / f"{stem}.png")
        Image.fromarray(np.array(mask, np.uint8)).save(root / "val" / "masks" / f"{stem}.png")
    return root


def write_predictions(folder: Path) -> Path:
    folder.mkdir()
    for stem, (_, pred) in SAMPLES.items():
        Image.fromarray(np.array(pred, np.uint8)).save(folder / f"{stem}.png")
    return folder


class PixelModel(LogitStandIn):
    """Stand-in for AerOSeg: logit of class t at a pixel = -(red * 255 / STEP - t)^2."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(preset="stand-in")
        self.scale = nn.Parameter(torch.tensor(255.0 / STEP), requires_grad=False)
        self.class_lists: list[list[str]] = []
        self.batch_sizes: list[int] = []

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(images.shape[0])
        return images[:, :1] * self.scale  # B×1×H×W

    def segment(self, features: torch.Tensor, classes: list[str]) -> torch.Tensor:
        self.class_lists.append(list(classes))
        t = torch.arange(len(classes), dtype=features.dtype).view(1, -1, 1, 1)
        return -((features - t) ** 2)  # B×T×H×W

    def forward(self, images: torch.Tensor, classes: list[str]) -> torch.Tensor:
        return self.segment(self.encode(images), classes)


def check_scores(data: dict) -> None:
    for name, iou in IOU.items():
        assert data["per_class_iou"][name] == pytest.approx(float(iou * 100))
    assert data["per_class_iou"]["e"] is None
    assert data["s_miou"] == pytest.approx(S_MIOU)
    assert data["u_miou"] == pytest.approx(U_MIOU)
    assert data["h_miou"] == pytest.approx(2 * S_MIOU * U_MIOU / (S_MIOU + U_MIOU))
    assert data["miou"] == pytest.approx(MIOU)


def test_predictions_mode_end_to_end(tmp_path, capsys):
    data, preds = make_dataset(tmp_path / "toy"), write_predictions(tmp_path / "san_out")
    out = tmp_path / "results" / "eval.json"
    rc = main(["evaluate", "--data", str(data), "--predictions", str(preds), "--json", str(out), "--quiet"])
    assert rc == 0
    document = json.loads(out.read_text())
    check_scores(document)
    assert document["confusion_matrix"] == [
        [3, 1, 0, 0, 0],
        [0, 4, 1, 0, 0],
        [1, 0, 3, 0, 0],
        [2, 0, 0, 5, 0],
        [0, 0, 0, 0, 0],
    ]
    assert document["method"] == "san_out" and document["preset"] is None
    assert document["dataset"] == "toy" and document["split"] == "val" and document["num_images"] == 3
    assert document["mode"] == "predictions" and document["predictions"] == str(preds)
    assert document["checkpoint"] is None and document["classes"] == CLASSES and document["unseen"] == UNSEEN
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind
    printed = capsys.readouterr().out
    assert "  2  c      unseen   60.00" in printed
    assert "  0  a      seen     42.86" in printed
    assert "  4  e      unseen     n/a" in printed
    assert f"s-mIoU {S_MIOU:.2f}  u-mIoU {U_MIOU:.2f}" in printed


def test_predictions_with_nodata_count_it_as_a_miss_of_the_true_class(tmp_path):
    data, preds = make_dataset(tmp_path / "toy"), tmp_path / "preds"
    preds.mkdir()
    classes = make_class_list(CLASSES)
    for stem, (_, pred) in SAMPLES.items():
        ids = np.array(pred, np.uint8)
        if stem == "img0":
            ids[0, 0] = 255  # a labelled "a" pixel (predicted right before) left as nodata
        ids[-1, -1] = 255 if stem == "img2" else ids[-1, -1]  # nodata on an ignore pixel: not read
        profile = dict(
            height=ids.shape[0], width=ids.shape[1], crs=None, transform=rasterio.Affine.identity()
        )
        writer = GeoTiffWriter(preds / f"{stem}.tif", profile, classes, source=stem)  # what predict writes
        writer.write(Window(0, 0, ids.shape[1], ids.shape[0]), ids, np.ones(ids.shape, np.float32))
        writer.finish()
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--data", str(data), "--predictions", str(preds), "--json", str(out), "--quiet"])
    assert rc == 0
    document = json.loads(out.read_text())
    assert document["per_class_iou"]["a"] == pytest.approx(200 / 7)  # TP 2 / (TP 2 + FP 3 + FN 1 + 1 missed)
    for name in ("b", "c", "d"):
        assert document["per_class_iou"][name] == pytest.approx(float(IOU[name] * 100))
    assert document["confusion_matrix"][0] == [2, 1, 0, 0, 0] and document["missed"] == [1, 0, 0, 0, 0]


def test_predictions_mode_errors_name_the_file(tmp_path, capsys):
    data, preds = make_dataset(tmp_path / "toy"), write_predictions(tmp_path / "preds")
    argv = ["evaluate", "--data", str(data), "--predictions", str(preds), "--quiet"]

    (preds / "img1.png").unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "no prediction for image 'img1'" in err and "img1.png" in err and "\n" not in err

    Image.fromarray(np.zeros((5, 4), np.uint8)).save(preds / "img1.png")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "img1.png is 5×4 but the mask of 'img1' is 2×4" in err and "\n" not in err

    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(preds / "img1.png")
    assert main(argv) == 2
    assert "RGB image" in capsys.readouterr().err

    Image.fromarray(np.full((2, 4), 9, np.uint8)).save(preds / "img1.png")
    assert main(argv) == 2
    assert "prediction has class id 9" in capsys.readouterr().err


def test_nothing_to_evaluate_is_a_user_error(tmp_path, capsys):
    data = make_dataset(tmp_path / "toy")
    assert main(["evaluate", "--data", str(data)]) == 2
    assert "--checkpoint DIR" in capsys.readouterr().err


@pytest.mark.parametrize(
    "mode_args",
    [["--mode", "whole", "--batch-size", "2"], ["--mode", "slide", "--window", "2", "--overlap", "0.5"]],
    ids=["whole", "slide"],
)
def test_model_modes_with_stand_in(tmp_path, monkeypatch, mode_args):
    data, out = make_dataset(tmp_path / "toy"), tmp_path / "eval.json"
    model = PixelModel()
    monkeypatch.setattr(command, "load_model", lambda args, device: model)
    argv = ["evaluate", "--data", str(data), "--checkpoint", str(tmp_path / "ckpt"), "--json", str(out)]
    assert main(argv + ["--device", "cpu", "--workers", "0", "--quiet", *mode_args]) == 0
    document = json.loads(out.read_text())
    check_scores(document)
    assert document["method"] == "stand-in" and document["preset"] == "stand-in"
    assert document["mode"] == mode_args[1] and document["num_images"] == 3
    assert all(classes == CLASSES for classes in model.class_lists)  # all classes, id order
    if mode_args[1] == "whole":
        assert model.batch_sizes == [2, 1]  # the two 2x4 images stack; the 3x3 one runs alone
        assert document["window"] is None
    else:
        assert len(model.class_lists) > 3  # several windows per image
        assert document["window"] == 2 and document["overlap"] == 0.5


def test_run_directory_resolves_to_final(tmp_path):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    assert checkpoint_folder(run) == run / "final"
    assert checkpoint_folder(run / "final") == run / "final"


def test_checkpoint_mode_with_saved_tiny_model(tmp_path):
    data, out = make_dataset(tmp_path / "toy"), tmp_path / "eval.json"
    build_tiny_model(tmp_path).save_pretrained(tmp_path / "run" / "final")
    argv = ["evaluate", "--data", str(data), "--checkpoint", str(tmp_path / "run"), "--json", str(out)]
    assert main(argv + ["--device", "cpu", "--workers", "0", "--quiet"]) == 0
    document = json.loads(out.read_text())
    assert document["method"] == "aeroseg" and document["mode"] == "reference"  # the default protocol

    model = AerOSeg.from_pretrained(tmp_path / "run" / "final").eval()  # the same protocol, by hand
    expected = ConfusionMatrix(len(CLASSES))
    for sample in SegmentationDataset(data, split="val"):
        scores = reference_scores(model, sample["image"], CLASSES)
        expected.update(scores.argmax(0), sample["mask"])
    assert document["confusion_matrix"] == expected.matrix.tolist()
    scores = expected.compute(CLASSES, UNSEEN)
    assert document["h_miou"] == pytest.approx(scores.h_miou, nan_ok=True)
