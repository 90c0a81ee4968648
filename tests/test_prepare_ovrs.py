"""`aeroseg prepare isaid|dlrsd` on a fake of OVRS's processed archive (tests/data/make_fake_ovrs.py)."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aeroseg.cli import main
from aeroseg.data import SegmentationDataset
from aeroseg.data.info import builtin_split
from aeroseg.data.ovrs import PAPER_COUNTS, count_report
from tests.helpers.standins import LogitStandIn

_spec = importlib.util.spec_from_file_location(
    "make_fake_ovrs", Path(__file__).parent / "data" / "make_fake_ovrs.py"
)
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)

ISAID_OVRS = [  # caoql98/OVRS datasets/iSAID.json (the class order of register_iSAID.py)
    "ship", "storage tank", "baseball diamond", "tennis court", "basketball court", "ground track field",
    "bridge", "large vehicle", "small vehicle", "helicopter", "swimming pool", "roundabout",
    "soccer ball field", "plane", "harbor",
]  # fmt: skip
DLRSD_OVRS = [  # caoql98/OVRS datasets/DLRSD.json
    "airplane", "bare soil", "buildings", "cars", "chaparral", "court", "dock", "field", "grass",
    "mobile home", "pavement", "sand", "sea", "ship", "tanks", "trees", "water",
]  # fmt: skip


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """The fake archive, unzipped as a user would (the folder holding OVS_datasets/)."""
    made = tmp_path_factory.mktemp("made")
    fake.make_ovrs(made)
    raw = tmp_path_factory.mktemp("raw")
    with zipfile.ZipFile(made / "OVS_datasets.zip") as zipped:
        zipped.extractall(raw)
    return raw


def test_class_order_is_ovrs():
    assert builtin_split("isaid")[0].classes == ISAID_OVRS
    assert builtin_split("dlrsd")[0].classes == DLRSD_OVRS


@pytest.mark.parametrize("dataset", ["isaid", "dlrsd"])
@pytest.mark.parametrize("level", ["parent", "root"])  # --raw: the folder holding OVS_datasets, or it
def test_processed_layout_prepares_with_ids_and_counts(archive, tmp_path, capsys, dataset, level):
    raw = archive if level == "parent" else archive / "OVS_datasets"
    out = tmp_path / "out"
    assert main(["prepare", dataset, "--raw", str(raw), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = fake.MASKS[dataset]
    counts = {split: len(entries) for split, entries in expected.items()}
    assert count_report(dataset, counts) in printed and "OVRS's processed layout" in printed
    paper = PAPER_COUNTS[dataset]
    assert f"the paper has {paper[0]:,} / {paper[1]:,}" in printed
    for split, entries in expected.items():
        stems = sorted(p.stem for p in (out / split / "masks").glob("*.png"))
        assert stems == sorted(stem for stem, _, _ in entries)  # all kept, the all-background one too
        for index, (stem, top, bottom) in enumerate(entries):
            written = np.asarray(Image.open(out / split / "masks" / f"{stem}.png"))
            assert np.array_equal(written, fake.mask(top, bottom))  # ids unchanged: OVRS order is ours
            pixels = np.asarray(Image.open(out / split / "images" / f"{stem}.png")).astype(int)
            tolerance = 0 if dataset == "isaid" else 12  # DLRSD images are JPEG in the release
            assert np.abs(pixels - fake.image(index)).max() <= tolerance
    data = SegmentationDataset(out, split="train")
    assert data.info.classes == (ISAID_OVRS if dataset == "isaid" else DLRSD_OVRS)
    assert len(data) == counts["train"]


def test_count_report_says_when_the_counts_are_the_papers():
    assert count_report("isaid", {"train": 18_076, "val": 6_363}).endswith("(the paper's)")
    assert "the paper has 5,601 / 1,401" in count_report("dlrsd", {"train": 5_600, "val": 1_401})


def test_mask_with_an_id_outside_the_class_list_is_refused(archive, tmp_path, capsys):
    raw = tmp_path / "raw"
    root = raw / "OVS_datasets" / "DLRSD_split"
    for split in ("train", "val"):
        for folder in ("imgs", "D2masks"):
            (root / split / folder).mkdir(parents=True)
        Image.fromarray(fake.image(0)).save(root / split / "imgs" / "a.jpg")
        Image.fromarray(fake.mask(3, 17 if split == "val" else 4)).save(root / split / "D2masks" / "a.png")
    assert main(["prepare", "dlrsd", "--raw", str(raw), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "val/D2masks/a.png holds class id 17" in err


def test_dataset_refuses_out_of_list_ids_in_training_and_evaluation(tmp_path, capsys, monkeypatch):
    from aeroseg.cli import evaluate as command
    from tests.test_train import write_dataset

    data = write_dataset(tmp_path / "data", n=2)
    bad = data / "val" / "masks" / "001.png"
    mask = np.asarray(Image.open(bad)).copy()
    mask[0, 0] = 9  # 4 classes: 9 is no class
    Image.fromarray(mask).save(bad)
    with pytest.raises(Exception, match=r"001.png holds class id 9, outside the 4 classes"):
        SegmentationDataset(data, split="val")[1]
    argv = ["evaluate", "--data", str(data), "--checkpoint", str(tmp_path / "none"), "--workers", "1"]

    class Zero(LogitStandIn):
        config = None

        def encode(self, images):
            return images

        def segment(self, feats, classes):
            return torch.zeros(feats.shape[0], len(classes), *feats.shape[-2:])

    monkeypatch.setattr(command, "load_model", lambda args, device: Zero())
    assert main([*argv, "--device", "cpu", "--quiet", "--mode", "reference"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "001.png holds class id 9" in err  # one line from a worker too
