"""Issue 14, items 7–16: crashes, inconsistencies and surprises a new user met, each reproduced as reported
(through the CLI where the item is about it). Items 1–6 are in ``test_new_user.py``."""

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

import aeroseg
import aeroseg.prediction.api
from aeroseg.cli import build_parser, main
from aeroseg.cli.train import resolve_config
from aeroseg.errors import CheckpointError, UserError
from aeroseg.prediction.classes import make_class_list, parse_classes
from aeroseg.prediction.legend import legend_font
from aeroseg.prediction.outputs import GeoTiffWriter, write_overlay
from aeroseg.progress import LogProgress, progress
from tests.helpers.tiny import build_tiny_model, tiny_overrides
from tests.test_evaluate import SAMPLES, check_scores, make_dataset
from tests.test_inference import PixelModel
from tests.test_new_user import cli, one_error_line
from tests.test_predict import CLASSES, smooth_image
from tests.test_predict_inputs import write_geotiff


# --- 7. output folders that do not exist; -o naming a file -------------------------------------------
def test_7_missing_output_folders_are_created(tmp_path, standin):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    out, vector, summary = tmp_path / "a" / "b", tmp_path / "v" / "w" / "p.gpkg", tmp_path / "j" / "s.json"
    assert (
        cli(scene, "--classes", CLASSES, "-o", str(out), "--vector", str(vector), "--json", str(summary)) == 0
    )
    assert (out / "scene.tif").is_file() and vector.is_file() and json.loads(summary.read_text())["ok"] == 1


def test_7_impossible_folders_and_a_file_as_o_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(aeroseg.registry, "segmenter", never)
    scenes = [write_geotiff(tmp_path / f"s{i}.tif", smooth_image(40, 40)) for i in range(2)]
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    for extra in (["-o", str(blocker / "out")], ["-o", "out", "--json", str(blocker / "s.json")]):
        assert cli(scenes[0], "--classes", CLASSES, *extra) == 2
        assert f"{blocker} is a file" in one_error_line(capsys)
    assert cli(*scenes, "--classes", CLASSES, "-o", str(blocker)) == 2
    assert one_error_line(capsys).endswith(
        f"-o {blocker} is an existing file; with 2 inputs -o names a folder"
    )
    assert blocker.read_text() == "a file"


# --- 8. --device auto for train; config messages naming the field and the allowed values -------------
def test_8_train_accepts_device_auto(tmp_path):
    args = build_parser({"train": None}).parse_args(["train", "--data", "d", "-o", "r", "--device", "auto"])
    assert resolve_config(args).device is None  # the config's "first GPU if any, else CPU"
    args = build_parser({"train": None}).parse_args(["train", "--data", "d", "-o", "r", "--device", "cpu"])
    assert resolve_config(args).device == "cpu"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rotations": "abc"}, r"rotations must be a list of multiples of 90 degrees .*got 'abc'"),
        ({"hidden_dim": -1}, "hidden_dim must be a whole number >= 1, got -1"),
        (
            {"reconstruction_target": "lab"},
            "reconstruction_target must be one of 'sam', 'clip', 'rgb', got 'lab'",
        ),
        ({"decoder_dims": (64,)}, r"decoder_dims must be a list of 2 integers, got \(64,\)"),
        ({"back_projection": "yes"}, "back_projection must be true or false, got 'yes'"),
    ],
)
def test_8_config_errors_name_the_field_and_the_allowed_values(overrides, message):
    with pytest.raises(UserError, match=message):
        aeroseg.build("aeroseg", pretrained=False, **overrides)


def test_8_guidance_layers_set_outside_the_encoder_name_the_range(tiny_backbones):
    overrides = {**tiny_overrides("aeroseg", tiny_backbones), "guidance_layers": (2, 9)}
    with pytest.raises(
        CheckpointError, match=r"guidance_layers \(2, 9\) do not fit .* of 4 blocks: .* in 1\.\.4"
    ):
        aeroseg.build("aeroseg", **overrides)


# --- 9. --resume without a run ------------------------------------------------------------------------
def test_9_resume_without_a_run_says_the_run_is_missing(tmp_path, capsys):
    run = tmp_path / "RUN"
    assert main(["train", "-o", str(run), "--resume"]) == 2
    assert one_error_line(capsys).endswith(f"nothing to resume: run directory {run} does not exist")
    assert main(["train", "--resume"]) == 2
    assert "--resume continues a run: pass -o RUN" in one_error_line(capsys)
    assert main(["train", "--resume", str(run / "checkpoints" / "step_000100")]) == 2
    assert "nothing to resume: checkpoint" in one_error_line(capsys)


# --- 10. -o result.tif and the README's output="out/" ------------------------------------------------
def test_10_a_single_input_with_o_file_writes_exactly_that_file(tmp_path, standin):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    result = tmp_path / "maps" / "result.tif"
    assert cli(scene, "--classes", CLASSES, "-o", str(result), "--quiet") == 0
    assert sorted(p.name for p in result.parent.iterdir()) == ["result.tif"]
    with rasterio.open(result) as ds:
        assert ds.crs.to_epsg() == 32633 and json.loads(ds.tags()["AEROSEG_CLASSES"])[0] == "building"


def test_10_the_readme_output_folder_works_in_python(tmp_path, monkeypatch):
    write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    monkeypatch.chdir(tmp_path)
    result = predict_readme_style(PixelModel())
    assert result.outputs["classes"] == Path("out/scene.tif") and os.path.isfile("out/scene.tif")
    with pytest.raises(UserError, match="an array has no file name"):
        aeroseg.predict(PixelModel(), np.zeros((8, 8, 3), np.uint8), ["road"], output="out/")


def predict_readme_style(model):
    return aeroseg.prediction.predict(
        model, "scene.tif", classes=["building", "road", "tree|forest"], output="out/"
    )


# --- 11. evaluate --predictions reads what predict writes ---------------------------------------------
def test_11_evaluate_scores_the_geotiffs_predict_writes(tmp_path, capsys):
    data, preds = make_dataset(tmp_path / "toy"), tmp_path / "preds"
    preds.mkdir()
    classes = make_class_list(["a", "b", "c", "d", "e"])
    for stem, (_, pred) in SAMPLES.items():
        ids = np.array(pred, np.uint8)
        profile = dict(
            height=ids.shape[0], width=ids.shape[1], crs=None, transform=rasterio.Affine.identity()
        )
        writer = GeoTiffWriter(preds / f"{stem}.tif", profile, classes, source=stem)
        writer.write(Window(0, 0, ids.shape[1], ids.shape[0]), ids, np.ones(ids.shape, np.float32))
        writer.finish()
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--data", str(data), "--predictions", str(preds), "--json", str(out), "--quiet"])
    assert rc == 0
    check_scores(json.loads(out.read_text()))


# --- 12. one flag name per setting, defaults in --help -------------------------------------------------
def test_12_one_name_per_setting_old_names_hidden(capsys):
    parser = build_parser()
    train = parser.parse_args(["train", "--out", "R", "--num-workers", "2"])
    assert train.out == "R" and parser.parse_args(["train", "-o", "R"]).out == "R"
    evaluate = parser.parse_args(["evaluate", "--data", "d", "--workers", "3"])
    assert (
        evaluate.workers == 3
        and parser.parse_args(["evaluate", "--data", "d", "--num-workers", "1"]).workers == 1
    )
    assert parser.parse_args(["prepare", "isaid", "--raw", "r", "--out", "o"]).out.name == "o"
    assert parser.parse_args(["report", "x.json", "--out", "t.md"]).out.name == "t.md"
    helps = {}
    for verb in ("train", "evaluate", "prepare", "report", "predict", "demo", "bench"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        helps[verb] = " ".join(capsys.readouterr().out.split())
    for verb, text in helps.items():
        assert "--out " not in text and "--workers" not in text, verb
        if verb not in ("report", "prepare"):
            assert (
                "--device DEVICE auto (the first GPU when there is one, else the CPU), cpu, cuda or cuda:N"
                in text
            )
    for verb in ("train", "evaluate", "predict", "demo"):
        assert "--guidance ID|DIR|FILE" in helps[verb] and "--clip ID|DIR|FILE" in helps[verb]
    for verb, flag in [
        (
            "predict",
            "--precision {fp32,bf16,fp16,auto} autocast precision; auto: bf16 where the device has native",
        ),
        ("predict", "(CRS units²) (default: 0.0)"),
        ("predict", "tolerance (CRS units) (default: 0.0)"),
        ("bench", "medians reported (default: 3)"),
        ("bench", "predict and training (default: 1)"),
        ("report", "8: mIoU (default: 2)"),
        ("demo", "--cache DIR where the sample image is cached (default: $AEROSEG_CACHE"),
        ("evaluate", "data-loading processes (default: 2)"),
    ]:
        assert flag in helps[verb], (verb, flag)


# --- 13. --version, a fast --help ------------------------------------------------------------------------
def test_13_version_and_help_without_torch(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"aeroseg {aeroseg.__version__}"
    code = "import sys\nfrom aeroseg.cli import main\ntry:\n main(['--help'])\nexcept SystemExit:\n pass\n"
    code += "print('loaded', sorted(m for m in ('torch', 'transformers', 'rasterio') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "predict" in done.stdout and "loaded []" in done.stdout


# --- 14. --quiet silences the libraries' bars; logs get plain lines ------------------------------------
def test_14_quiet_silences_the_weight_loading_bars(tmp_path, standin):
    from transformers.utils import logging as hf_logging

    def enable():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # huggingface_hub: HF_HUB_DISABLE_PROGRESS_BARS has priority
            hf_logging.enable_progress_bar()

    enable()
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(40, 40))
    try:
        assert cli(scene, "--classes", CLASSES, "-o", str(tmp_path / "out"), "--quiet") == 0
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        enable()


def test_14_a_log_gets_plain_periodic_lines_not_bars():
    log = io.StringIO()
    bar = progress(total=4, desc="predict scene", unit="window", file=log)
    assert isinstance(bar, LogProgress)
    bar.interval = 0  # every update writes a line
    with bar:
        bar.update(2)
        bar.write("a message", file=log)
        bar.update(2)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and lines[1] == "a message"
    assert lines[0].startswith("predict scene: 2/4 windows (50%), 0:00:00 elapsed, about 0:00:00 left")
    assert lines[-1].startswith("predict scene: 4/4 windows (100%)")
    quiet = io.StringIO()
    with progress(range(3), file=quiet) as short:  # short work in a log writes nothing
        assert list(short) == [0, 1, 2]
    assert quiet.getvalue() == ""


# --- 15. guidance blocks from the encoder's depth; training-free offline message -----------------------
def test_15_the_presets_blocks_follow_another_encoder_depth(tiny_backbones):
    overrides = tiny_overrides("aeroseg", tiny_backbones)
    del overrides["guidance_layers"]  # the preset's 8 and 16 (SAM ViT-L) on a 4-block SAM
    with pytest.warns(UserWarning, match=r"blocks \(8, 16\) do not fit .* 4 blocks; took blocks \(1, 3\)"):
        model = aeroseg.build("aeroseg", **overrides)
    assert model.config.guidance_layers == (1, 3) and model.guidance_encoder.layers == (1, 3)


def test_15_training_free_offline_message_mentions_guidance_none(tiny_backbones, tmp_path, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(32, 32))
    rc = main(
        [
            "predict",
            scene,
            "--clip",
            str(tiny_backbones["clip"]),
            "--classes",
            "road",
            "-o",
            str(tmp_path / "o"),
        ]
    )
    line = one_error_line(capsys)
    assert rc == 2 and "facebook/sam-vit-base" in line and "--guidance none" in line


# --- 16. the smaller ones ------------------------------------------------------------------------------
def test_16_overlap_and_negative_vector_options_are_refused(tmp_path, standin, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(100, 150))
    assert cli(scene, "--classes", CLASSES, "-o", "out", "--overlap", "0.99") == 2  # the user's window: 64
    assert one_error_line(capsys).endswith(
        f"got 0.99 (3,219 windows of 64² for {scene} (150×100 px), against 6 at 0.25)"
    )
    assert cli(str(tmp_path), "--classes", CLASSES, "-o", "out", "--overlap", "0.99") == 2  # a folder
    assert one_error_line(capsys).endswith(
        "got 0.99 (a window of 64² every 1 px: 2,304× the windows of 0.25)"
    )
    for flag in ("--min-area", "--simplify"):
        assert cli(scene, "--classes", CLASSES, "-o", "out", "--vector", "v.gpkg", flag, "-1") == 2
        assert "--min-area and --simplify must be >= 0" in one_error_line(capsys)


def test_16_a_class_named_background_gets_polygons_without_a_threshold(tmp_path, standin):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(64, 64))
    vector = tmp_path / "p.gpkg"
    assert cli(scene, "--classes", "background,road", "-o", str(tmp_path / "o"), "--vector", str(vector)) == 0
    with rasterio.open(tmp_path / "o" / "scene.tif") as ds:
        present = set(np.unique(ds.read(1)).tolist())
    names = set(pyogrio.raw.read(vector)[3][0])
    assert 0 in present and "background" in names


def test_16_hash_inside_a_class_name_is_kept(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# lanes\nlane#2|lane 2\ntree  # vegetation\n#commented\n")
    assert parse_classes(file=path).synonyms == (("lane#2", "lane 2"), ("tree",))


def test_16_legend_wraps_into_columns_and_says_when_glyphs_are_missing(tmp_path):
    names = [f"class {i}" for i in range(254)]
    rgb = np.zeros((512, 512, 3), np.uint8)
    write_overlay(tmp_path / "o.png", rgb, np.zeros((512, 512), np.uint8), names)
    width, height = Image.open(tmp_path / "o.png").size
    assert height == 512 and 512 < width < 512 + 1000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        font = legend_font(["road", "\U0001d50a\U0010fffd"])  # a private-use character: no font has it
    assert any("show as boxes" in str(w.message) for w in caught)
    assert font is not None


def test_16_a_stem_clash_fails_only_the_clashing_file(tmp_path, standin, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(smooth_image(40, 40).transpose(1, 2, 0)).save(folder / "a.png")
    write_geotiff(folder / "a.tif", smooth_image(40, 40))
    write_geotiff(folder / "b.tif", smooth_image(40, 40))
    summary = tmp_path / "s.json"
    assert cli(str(folder), "--classes", CLASSES, "-o", str(tmp_path / "o"), "--json", str(summary)) == 1
    records = {os.path.basename(r["input"]): r for r in json.loads(summary.read_text())["images"]}
    assert records["a.png"]["status"] == "ok" and records["b.tif"]["status"] == "ok"
    assert records["a.tif"]["status"] == "failed" and "a.png" in records["a.tif"]["error"]
    assert "a.tif: its outputs would have the names of those of" in capsys.readouterr().err


def test_16_a_failed_vector_does_not_count_written_rasters_as_failed(tmp_path, standin, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_geotiff(folder / "geo.tif", smooth_image(40, 40))
    Image.fromarray(smooth_image(40, 40).transpose(1, 2, 0)).save(folder / "plain.png")
    summary = tmp_path / "s.json"
    args = ["--vector", str(tmp_path / "v.gpkg"), "--vector-pixels", "--json", str(summary)]
    assert cli(str(folder), "--classes", CLASSES, "-o", str(tmp_path / "o"), *args) == 1
    document = json.loads(summary.read_text())
    assert (document["ok"], document["failed"], document["vector_failed"]) == (2, 0, 1)
    assert "2 segmented, 0 skipped (outputs exist), 0 failed, 1 without polygons" in capsys.readouterr().err


def test_16_saved_weights_are_readable_like_any_new_file(tmp_path, tiny_backbones):
    umask = os.umask(0o022)
    try:
        build_tiny_model().save_pretrained(tmp_path / "m")
    finally:
        os.umask(umask)
    assert oct(os.stat(tmp_path / "m" / "model.safetensors").st_mode & 0o777) == "0o644"


def test_progress_interval_comes_from_the_environment():
    import subprocess
    import sys

    code = "import aeroseg.progress as p; print(p.LOG_INTERVAL)"
    env = {**__import__("os").environ, "AEROSEG_PROGRESS_INTERVAL": "2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.strip() == "2.0"
