import json
import math

import pytest

from aeroseg.cli import main
from aeroseg.metrics import SegmentationScores


def write_eval(path, method, dataset, s, u, h, miou, method_key="method"):
    scores = SegmentationScores({"x": miou}, unseen=[], s_miou=s, u_miou=u, h_miou=h, miou=miou)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(scores.to_json(**{method_key: method}, dataset=dataset, split="val"))
    return path


@pytest.fixture
def results(tmp_path):
    """The paper's numbers for OVRS (iSAID, DLRSD) and AerOSeg (all three; DLRSD from a run dir)."""
    run = tmp_path / "runs" / "aeroseg_dlrsd"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text(
        json.dumps({"format": "aeroseg", "config": {"preset": "aeroseg"}})
    )
    write_eval(run / "eval_val.json", "whatever-json-says", "dlrsd", 60.37, 39.12, 47.48, 51.62)
    return [
        write_eval(tmp_path / "ovrs_isaid.json", "ovrs", "isaid", 75.85, 49.27, 59.73, 60.0),
        write_eval(tmp_path / "ovrs_dlrsd.json", "ovrs", "dlrsd", 61.00, 31.86, 41.86, 45.0),
        write_eval(tmp_path / "ours_isaid.json", "aeroseg", "isaid", 75.48, 51.46, 61.20, 65.87),
        write_eval(
            tmp_path / "ours_oem.json", "aeroseg", "openearthmap", 51.27, 48.16, 49.66, 49.71, "preset"
        ),
        run,
    ]


def test_table_2_layout_and_average(results, tmp_path, capsys):
    out = tmp_path / "tables" / "table2.md"
    assert main(["report", *map(str, results), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    lines = text.splitlines()
    assert lines[0].startswith("Table 2.")
    assert lines[2] == (
        "| Method | iSAID s-mIoU | iSAID u-mIoU | iSAID h-mIoU | DLRSD s-mIoU | DLRSD u-mIoU | DLRSD h-mIoU"
        " | OEM s-mIoU | OEM u-mIoU | OEM h-mIoU | Average s-mIoU | Average u-mIoU | Average h-mIoU |"
    )
    assert lines[3] == "| --- |" + " ---: |" * 12
    assert lines[4] == "| OVRS | 75.85 | 49.27 | 59.73 | 61.00 | 31.86 | 41.86 | – | – | – | – | – | – |"
    # Average = mean over the datasets (the paper's 62.37 / 46.25 / 52.78)
    assert lines[5] == (
        "| AerOSeg | 75.48 | 51.46 | 61.20 | 60.37 | 39.12 | 47.48 | 51.27 | 48.16 | 49.66"
        " | 62.37 | 46.25 | 52.78 |"
    )
    assert len(lines) == 6


def test_table_3_ablation_rows(tmp_path, capsys):
    paths = [
        write_eval(tmp_path / "a.json", "config-a", "isaid", 70.0, 49.0, 58.10, 60.0),
        write_eval(tmp_path / "c.json", "aeroseg", "isaid", 75.48, 51.46, 61.20, 65.87),
        write_eval(tmp_path / "c2.json", "aeroseg", "dlrsd", 60.37, 39.12, 47.48, 51.62),
        write_eval(tmp_path / "san.json", "SAN", "isaid", 62.28, 35.77, 45.44, 50.0),
    ]
    assert main(["report", "--table", "3", *map(str, paths)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[2] == (
        "| Configuration | Guidance Encoder | Semantic Back-projection loss | Remote-Sensing Prompts"
        " | iSAID | DLRSD | Average |"
    )
    assert lines[4:] == [
        "| Baseline | ✗ | - | ✗ | – | – | – |",
        "| Config-A | ✓ | ✗ | ✗ | 58.10 | – | – |",
        "| Config-B | ✓ | ✓ | ✗ | – | – | – |",
        "| Config-C | ✓ | ✓ | ✓ | 61.20 | 47.48 | 54.34 |",
    ]
    assert "no row for SAN" in captured.err


def test_table_8_miou(results, capsys):
    assert main(["report", "--table", "8", *map(str, results[2:])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == [
        "| Methods | iSAID | DLRSD | OEM |",
        "| --- | ---: | ---: | ---: |",
        "| AerOSeg | 65.87 | 51.62 | 49.71 |",
    ]


def test_run_directory_preset_names_the_method(results, capsys):
    run = results[-1]
    assert main(["report", "--table", "8", str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "| AerOSeg | 51.62 |"


def test_nan_scores_and_errors(tmp_path, capsys):
    no_unseen = write_eval(tmp_path / "x.json", "my-model", "custom", 40.0, math.nan, math.nan, 40.0)
    assert main(["report", str(no_unseen)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "| my-model | 40.00 | – | – |"

    other = write_eval(tmp_path / "y.json", "my_model", "custom", 1.0, 1.0, 1.0, 1.0)
    assert main(["report", str(no_unseen), str(other)]) == 0  # unknown names are kept as they are
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "| my-model | 40.00 | – | – |",
        "| my_model | 1.00 | 1.00 | 1.00 |",
    ]
    assert main(["report", str(no_unseen), str(no_unseen)]) == 2
    assert "two results for my-model on custom" in capsys.readouterr().err

    (tmp_path / "bad.json").write_text("{not json")
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty_run").mkdir()
    assert main(["report", str(tmp_path / "empty_run")]) == 2
    assert "no eval*.json" in capsys.readouterr().err


def test_table_8_training_free_rows(tmp_path, capsys):
    """The training-free presets as `aeroseg evaluate --preset` records them, before AerOSeg."""
    paths = [
        write_eval(tmp_path / "c.json", "aeroseg", "isaid", 75.48, 51.46, 61.20, 65.87),
        write_eval(tmp_path / "tf.json", "training-free", "isaid", 20.0, 10.0, 13.33, 15.5),
        write_eval(tmp_path / "ov3.json", "segearth-ov3", "isaid", 40.0, 30.0, 34.29, 37.25),
        write_eval(tmp_path / "ov.json", "segearth-ov", "isaid", 25.0, 15.0, 18.75, 21.7),
        write_eval(tmp_path / "ov3o.json", "segearth-ov3", "openearthmap", 45.0, 40.0, 42.35, 42.9),
    ]
    assert main(["report", "--table", "8", *map(str, paths)]) == 0
    assert capsys.readouterr().out.splitlines()[4:] == [
        "| SegEarth-OV | 21.70 | – |",
        "| SegEarth-OV3 | 37.25 | 42.90 |",
        "| Training-free | 15.50 | – |",
        "| AerOSeg | 65.87 | – |",
    ]
