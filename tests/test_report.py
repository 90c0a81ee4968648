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
        "| Method | Venue | iSAID s-mIoU | iSAID u-mIoU | iSAID h-mIoU | DLRSD s-mIoU | DLRSD u-mIoU | DLRSD h-mIoU"
        " | OEM s-mIoU | OEM u-mIoU | OEM h-mIoU | Average s-mIoU | Average u-mIoU | Average h-mIoU |"
    )
    assert lines[3] == "| --- | --- |" + " ---: |" * 12
    assert (
        lines[4]
        == "| OVRS | arXiv'24 | 75.85 | 49.27 | 59.73 | 61.00 | 31.86 | 41.86 | – | – | – | – | – | – |"
    )
    # Average = mean over the datasets (the paper's 62.37 / 46.25 / 52.78)
    assert lines[5] == (
        "| AerOSeg | - | 75.48 | 51.46 | 61.20 | 60.37 | 39.12 | 47.48 | 51.27 | 48.16 | 49.66"
        " | 62.37 | 46.25 | 52.78 |"
    )
    assert len(lines) == 6


# the paper's Table 2: s-, u-, h-mIoU on iSAID, DLRSD, OEM, then its printed Average
PAPER_TABLE_2 = {
    "SAN": (
        "CVPR'23",
        (62.28, 35.77, 45.44),
        (50.18, 12.62, 20.17),
        (45.36, 15.19, 22.76),
        (52.61, 21.19, 29.46),
    ),
    "SCAN": (
        "CVPR'24",
        (44.31, 35.55, 39.45),
        (25.86, 20.10, 22.62),
        (31.85, 16.53, 21.77),
        (34.01, 24.06, 27.95),
    ),
    "SED": (
        "CVPR'24",
        (74.37, 36.00, 48.51),
        (77.73, 27.00, 40.08),
        (57.46, 46.95, 51.68),
        (69.85, 36.65, 46.76),
    ),
    "CAT-Seg": (
        "CVPR'24",
        (72.57, 42.64, 53.70),
        (52.79, 24.39, 33.36),
        (49.33, 39.51, 43.87),
        (58.23, 35.51, 43.64),
    ),
    "OVRS": (
        "arXiv'24",
        (75.85, 49.27, 59.73),
        (61.00, 31.86, 41.86),
        (51.20, 47.23, 49.13),
        (62.68, 42.79, 50.24),
    ),
    "AerOSeg": (
        "-",
        (75.48, 51.46, 61.20),
        (60.37, 39.12, 47.48),
        (51.27, 48.16, 49.66),
        (62.37, 46.25, 52.78),
    ),
}


def test_table_2_prints_every_row_of_the_paper_from_the_presets_evaluations(tmp_path, capsys):
    """One evaluation JSON per method and dataset, named by the preset that made it (as ``aeroseg evaluate
    --checkpoint`` records it): the six rows in the paper's order, and its averages."""
    presets = {
        "SAN": "san",
        "SCAN": "scan",
        "SED": "sed",
        "CAT-Seg": "cat-seg",
        "OVRS": "ovrs",
        "AerOSeg": "aeroseg",
    }
    paths = []
    for method in reversed(list(PAPER_TABLE_2)):  # given in any order
        _, *datasets, _ = PAPER_TABLE_2[method]
        for dataset, (s, u, h) in zip(("isaid", "dlrsd", "openearthmap"), datasets, strict=True):
            path = tmp_path / f"{presets[method]}_{dataset}.json"
            paths.append(write_eval(path, presets[method], dataset, s, u, h, 50.0, method_key="preset"))
    assert main(["report", "--table", "2", *map(str, paths)]) == 0
    rows = capsys.readouterr().out.splitlines()[4:]
    assert [r.split(" | ")[0].strip("| ") for r in rows] == list(PAPER_TABLE_2)
    for row, (venue, *groups) in zip(rows, PAPER_TABLE_2.values(), strict=True):
        cells = row.strip("| ").split(" | ")
        assert cells[1] == venue
        printed = [float(c) for c in cells[2:]]
        expected = [v for group in groups for v in group]
        # the paper's averages are the means of its rounded numbers, rounded: within 0.01
        assert printed[:9] == expected[:9] and printed[9:] == pytest.approx(expected[9:], abs=0.011), row


def test_the_other_released_models_have_their_own_rows(tmp_path, capsys):
    paths = [
        write_eval(tmp_path / "a.json", "sed-large", "isaid", 70.0, 40.0, 50.91, 55.0, method_key="preset"),
        write_eval(tmp_path / "b.json", "sed", "isaid", 74.37, 36.00, 48.51, 55.0, method_key="preset"),
    ]
    assert main(["report", *map(str, paths)]) == 0
    rows = capsys.readouterr().out.splitlines()[4:]
    assert [r.split(" | ")[0] for r in rows] == ["| SED", "| SED (L)"]


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
    assert capsys.readouterr().out.splitlines()[-1] == "| my-model |  | 40.00 | – | – |"  # no venue known

    other = write_eval(tmp_path / "y.json", "my_model", "custom", 1.0, 1.0, 1.0, 1.0)
    assert main(["report", str(no_unseen), str(other)]) == 0  # unknown names are kept as they are
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "| my-model |  | 40.00 | – | – |",
        "| my_model |  | 1.00 | 1.00 | 1.00 |",
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


def test_quiet_is_accepted_as_in_every_verb(results, capsys):
    assert main(["report", "--table", "8", str(results[-1]), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "| AerOSeg | 51.62 |" and captured.err == ""
