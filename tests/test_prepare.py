"""`aeroseg prepare` on tiny fake downloads in the official layouts (tests/data/make_fake_raw.py)."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aeroseg.atomic import temporary_path
from aeroseg.cli import main
from aeroseg.data import DatasetInfo, SegmentationDataset
from aeroseg.data.labels import colors_to_ids, values_to_ids
from aeroseg.windows import stride_starts

_spec = importlib.util.spec_from_file_location(
    "make_fake_raw", Path(__file__).parent / "data" / "make_fake_raw.py"
)
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)

MAKERS = {"isaid": fake.make_isaid, "dlrsd": fake.make_dlrsd, "openearthmap": fake.make_openearthmap}


def _prepare(dataset, raw, out, *extra):
    return main(["prepare", dataset, "--raw", str(raw), "--out", str(out), *extra])


def _stems(out, split):
    return sorted(p.stem for p in (out / split / "masks").glob("*.png"))


def _mask(out, split, stem):
    return np.asarray(Image.open(out / split / "masks" / f"{stem}.png"))


def _image(out, split, stem):
    return np.asarray(Image.open(out / split / "images" / f"{stem}.png"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """dataset -> (raw folder, output folder) after one quiet run."""
    root = tmp_path_factory.mktemp("prepared")
    result = {}
    for dataset, make in MAKERS.items():
        raw, out = make(root / "raw" / dataset), root / "out" / dataset
        assert _prepare(dataset, raw, out, "--quiet") == 0
        result[dataset] = (raw, out)
    return result


def test_isaid_patches_ids_and_split(prepared):
    raw, out = prepared["isaid"]
    # 1200×896 scene -> windows at x = 0 and 304 (flush right); 640×480 -> one padded patch; the
    # background-only scene P0002 gives no patch; val keeps its own scene
    assert _stems(out, "train") == ["P0000_0_896_0_896", "P0000_0_896_304_1200", "P0001_0_896_0_896"]
    assert _stems(out, "val") == ["P0003_0_896_0_896"]
    info = DatasetInfo.from_yaml(out / "dataset.yaml")
    assert info.name == "isaid" and info.ignore_index == 255 and len(info.classes) == 15
    assert {info.classes[i] for i in (0, 8, 13, 14)} == {"ship", "small vehicle", "plane", "harbor"}

    left, right = _mask(out, "train", "P0000_0_896_0_896"), _mask(out, "train", "P0000_0_896_304_1200")
    assert left[150, 150] == 0  # ship (0, 0, 63) -> id 0 (OVRS order)
    assert right[350, 1050 - 304] == 13  # plane (0, 127, 255) -> id 13
    assert left[0, 0] == 255 and left[525, 525] == 255  # background and an off-palette colour
    assert left.dtype == np.uint8 and set(np.unique(left).tolist()) == {0, 255}
    scene = np.asarray(Image.open(raw / "train" / "images" / "P0000.png"))
    assert np.array_equal(_image(out, "train", "P0000_0_896_304_1200"), scene[:, 304:1200])

    padded, padded_image = _mask(out, "train", "P0001_0_896_0_896"), _image(out, "train", "P0001_0_896_0_896")
    assert padded.shape == (896, 896) and padded[75, 100] == 14  # harbor
    assert padded[600, 800] == 255 and not padded_image[600, 800].any()  # padding: ignore / black
    assert _mask(out, "val", "P0003_0_896_0_896")[15, 35] == 8  # small vehicle


def test_isaid_keep_empty_keeps_background_patches(tmp_path):
    raw = fake.make_isaid(tmp_path / "raw")
    assert _prepare("isaid", raw, tmp_path / "out", "--quiet", "--keep-empty") == 0
    assert "P0002_0_896_0_896" in _stems(tmp_path / "out", "train")
    assert (_mask(tmp_path / "out", "train", "P0002_0_896_0_896") == 255).all()


def test_dlrsd_ids_and_split(prepared):
    raw, out = prepared["dlrsd"]
    # no official split: last fifth of each scene class (natural name order) is val
    assert _stems(out, "train") == [f"{c}{i:02d}" for c in ("airplane", "harbor") for i in range(4)]
    assert _stems(out, "val") == ["airplane04", "harbor04"]
    half = fake.DLRSD_SIZE // 2
    airplane, harbor = _mask(out, "train", "airplane01"), _mask(out, "val", "harbor04")
    assert airplane[0, 0] == 0 and airplane[half, 0] == 16  # values 1 airplane, 17 water -> ids 0, 16
    assert harbor[0, 0] == 6 and harbor[half, 0] == 13  # values 7 dock, 14 ship -> ids 6, 13
    info = DatasetInfo.from_yaml(out / "dataset.yaml")
    assert (info.classes[0], info.classes[16], info.classes[6]) == ("airplane", "water", "dock")
    scene = np.asarray(Image.open(raw / "UCMerced_LandUse" / "Images" / "airplane" / "airplane01.tif"))
    assert np.array_equal(_image(out, "train", "airplane01"), scene)


def test_openearthmap_tiles_ids_and_split(prepared, tmp_path, capsys):
    raw, out = prepared["openearthmap"]
    assert _stems(out, "train") == [
        "aachen_1_0_512_0_512",
        "aachen_1_0_512_488_1000",
        "aachen_1_488_1000_0_512",
        "aachen_1_488_1000_488_1000",
        "aachen_2_0_512_0_512",
    ]  # palu_1 (xBD: no image) is skipped; test.txt is not used
    assert _stems(out, "val") == ["aachen_3_0_512_0_512", "aachen_3_0_512_88_600"]
    top_left = _mask(out, "train", "aachen_1_0_512_0_512")
    assert top_left[150, 150] == 7 and top_left[300, 300] == 1  # building (8), rangeland (2)
    assert _mask(out, "train", "aachen_1_0_512_488_1000")[25, 950 - 488] == 255  # unknown (0)
    assert _mask(out, "train", "aachen_1_488_1000_488_1000")[650 - 488, 650 - 488] == 0  # bareland (1)
    small = _mask(out, "train", "aachen_2_0_512_0_512")
    assert small[5, 5] == 255 and small[100, 100] == 3 and small[400, 450] == 255  # unknown, road, padding
    assert (_mask(out, "val", "aachen_3_0_512_88_600") == 5).all()  # water (6)

    # not quiet: the skipped xBD scene is reported
    assert _prepare("openearthmap", raw, tmp_path / "again") == 0
    assert "skipped 1 listed scenes without an image (xBD)" in capsys.readouterr().out


@pytest.mark.parametrize("dataset", sorted(MAKERS))
def test_prepared_folder_loads_as_a_dataset(prepared, dataset):
    _, out = prepared[dataset]
    for split in ("train", "val"):
        ds = SegmentationDataset(out, split=split)
        sample = ds[0]
        assert len(ds) == len(_stems(out, split))
        assert sample["image"].shape[-2:] == sample["mask"].shape
        assert int(sample["mask"].max()) == 255 or int(sample["mask"].max()) < len(ds.info.classes)


@pytest.mark.parametrize("dataset", sorted(MAKERS))
def test_second_run_skips_everything(prepared, dataset, capsys):
    _, out = prepared[dataset]
    files = sorted(p for p in out.rglob("*.png"))
    before = {p: p.stat().st_mtime_ns for p in files}
    capsys.readouterr()
    assert _prepare(dataset, prepared[dataset][0], out) == 0
    assert "0 written now" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in sorted(out.rglob("*.png"))} == before


def test_interrupted_run_resumes(tmp_path):
    raw, out = fake.make_isaid(tmp_path / "raw"), tmp_path / "out"
    assert _prepare("isaid", raw, out, "--quiet") == 0
    kept = out / "train" / "masks" / "P0000_0_896_0_896.png"
    redone = out / "train" / "masks" / "P0000_0_896_304_1200.png"
    kept_mtime = kept.stat().st_mtime_ns
    # as if killed while writing P0000's second mask: no marker, no final mask, a half-written temp file,
    # and no dataset.yaml yet
    (out / ".prepare" / "train" / "P0000.done").unlink()
    redone.unlink()
    half_written = temporary_path(redone).with_name(
        temporary_path(redone).name.replace(f"{os.getpid()}-", "999999-")
    )
    half_written.write_bytes(b"\x89PNG\r\n")
    (out / "dataset.yaml").unlink()

    assert _prepare("isaid", raw, out, "--quiet") == 0
    assert _mask(out, "train", "P0000_0_896_304_1200")[350, 1050 - 304] == 13
    assert not half_written.exists()
    assert kept.stat().st_mtime_ns == kept_mtime  # complete files are not rewritten
    assert (out / "dataset.yaml").is_file() and (out / ".prepare" / "train" / "P0000.done").is_file()


@pytest.mark.parametrize(
    ("dataset", "missing"),
    [("isaid", "train"), ("dlrsd", "UCMerced_LandUse/Images"), ("openearthmap", "train.txt")],
)
def test_wrong_layout_names_what_is_missing(tmp_path, capsys, dataset, missing):
    (tmp_path / "raw").mkdir()
    assert _prepare(dataset, tmp_path / "raw", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(tmp_path / "raw" / missing) in err and "expected" in err
    assert not (tmp_path / "out" / "dataset.yaml").exists()


def test_missing_label_is_named(tmp_path, capsys):
    raw = fake.make_isaid(tmp_path / "isaid")
    (raw / "train" / "Semantic_masks" / "images" / "P0001_instance_color_RGB.png").unlink()
    assert _prepare("isaid", raw, tmp_path / "out") == 2
    assert "P0001.png has no mask P0001_instance_color_RGB.png" in capsys.readouterr().err

    raw = fake.make_openearthmap(tmp_path / "oem")
    (raw / "aachen" / "labels" / "aachen_3.tif").unlink()
    assert _prepare("openearthmap", raw, tmp_path / "out2") == 2
    assert f"has no label: expected {raw / 'aachen' / 'labels' / 'aachen_3.tif'}" in capsys.readouterr().err


def test_zipped_download_asks_to_unzip(tmp_path, capsys):
    (tmp_path / "raw" / "train" / "images").mkdir(parents=True)
    (tmp_path / "raw" / "val").mkdir()
    (tmp_path / "raw" / "train" / "images" / "part1.zip").write_bytes(b"PK")
    assert _prepare("isaid", tmp_path / "raw", tmp_path / "out") == 2
    assert "part1.zip: unzip them in place" in capsys.readouterr().err


def test_out_folder_of_another_dataset_is_refused(prepared, tmp_path, capsys):
    raw = fake.make_dlrsd(tmp_path / "raw")
    assert _prepare("dlrsd", raw, prepared["isaid"][1]) == 2
    assert "already holds dataset 'isaid'" in capsys.readouterr().err


def test_resuming_with_other_options_is_refused(prepared, capsys):
    raw, out = prepared["isaid"]
    assert _prepare("isaid", raw, out, "--keep-empty") == 2
    assert "was prepared with other options" in capsys.readouterr().err


@pytest.mark.parametrize("length", [896, 897, 1200, 1408, 1409, 2000, 5000])
@pytest.mark.parametrize(("size", "stride"), [(896, 512), (512, 512), (256, 200)])
def test_windows_match_mmsegmentation(length, size, stride):
    # mmsegmentation's isaid.py: a window at every multiple of the stride, shifted back inside the image
    mmseg = sorted({min(x, length - size) for x in range(0, length, stride)})
    starts = stride_starts(length, size, stride)
    assert starts == mmseg
    assert starts[0] == 0 and starts[-1] + size == length


def test_label_codes():
    rgb = np.array([[[0, 0, 63], [0, 127, 255], [9, 9, 9]]], dtype=np.uint8)
    assert colors_to_ids(rgb, [(0, 127, 255), (0, 0, 63)]).tolist() == [[1, 0, 255]]
    values = np.array([[0, 1, 8, 9]], dtype=np.uint8)
    assert values_to_ids(values, list(range(1, 9))).tolist() == [[255, 0, 7, 255]]


def test_dlrsd_rgb_labels_use_the_colour_map(tmp_path):
    raw = fake.make_dlrsd(tmp_path / "raw")
    label = raw / "DLRSD" / "Images" / "harbor" / "harbor00.png"
    Image.open(label).convert("RGB").save(label)  # same picture saved as RGB colours
    assert _prepare("dlrsd", raw, tmp_path / "out", "--quiet") == 0
    mask = _mask(tmp_path / "out", "train", "harbor00")
    assert mask[0, 0] == 6 and mask[-1, 0] == 13


def test_fake_raw_script_runs(tmp_path):
    import subprocess
    import sys

    script = Path(__file__).parent / "data" / "make_fake_raw.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["dlrsd", "isaid", "openearthmap"]


def test_usage_shows_o_as_required_and_errors_name_it(prepared, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["prepare", "dlrsd", "--raw", str(tmp_path)])
    assert exit_code.value.code == 2
    err = capsys.readouterr().err
    assert "--raw DIR -o DIR" in err and "[-o DIR]" not in err  # the usage line
    assert "the following arguments are required: -o/--output" in err
    raw = fake.make_dlrsd(tmp_path / "raw")
    assert _prepare("dlrsd", raw, prepared["isaid"][1]) == 2
    assert "give another -o/--output for dlrsd" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert _prepare("dlrsd", raw, tmp_path / "file") == 2
    err = capsys.readouterr().err
    assert f"-o/--output {tmp_path / 'file'} is a file; give a folder" in err and "--out " not in err
