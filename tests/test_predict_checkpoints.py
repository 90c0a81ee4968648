"""``aeroseg predict --checkpoint`` (and ``--clip DIR``) with weight folders and files that do not load: one
line naming the file and what is wrong, exit 2, before any model is allocated; training-run folders."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from aeroseg.cli import main
from tests.helpers.tiny import build_tiny_model
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff


def _truncate(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _widen_one_tensor(folder):
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[3]
    weights[name] = torch.zeros([n + 1 for n in weights[name].shape])
    save_file(weights, folder / "model.safetensors", {"format": "pt"})


def _huge_config(value):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        (config.get("clip_config") or config)["text_config"]["hidden_size"] = value
        (folder / "config.json").write_text(json.dumps(config))

    return edit


BROKEN_WEIGHTS = [
    (_truncate, r"model.safetensors is not a complete safetensors file \(.*\); it may be truncated"),
    (_widen_one_tensor, r"model.safetensors: tensor \S+ is \d+(×\d+)*, but \S+config.json describes \d+"),
    (
        _huge_config(10**9),
        r"model.safetensors: tensor \S+ is \d+×\d+, but \S+config.json describes \d+×1000000000",
    ),
    (_huge_config(1e9), r"config.json: Validation error for field 'hidden_size': .*expected int, got float"),
]


@pytest.mark.parametrize(
    ("flag", "edit", "message"), [(f, *b) for f in ("--clip", "--checkpoint") for b in BROKEN_WEIGHTS]
)
def test_broken_weight_folders_are_one_line_before_any_allocation(
    tmp_path, tiny_backbones, capsys, flag, edit, message
):
    folder = tmp_path / "weights"
    if flag == "--clip":
        shutil.copytree(tiny_backbones["clip"], folder)
    else:
        build_tiny_model().save_pretrained(folder)
    edit(folder)
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(32, 32))
    model = (
        ["--clip", str(folder), "--guidance", "none"] if flag == "--clip" else ["--checkpoint", str(folder)]
    )
    rc = main(
        ["predict", scene, *model, "--classes", "road,tree", "-o", str(tmp_path / "out"), "--window", "32"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(folder) in err[0], err
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "out").exists()


def test_a_pickled_checkpoint_is_refused_in_our_words(tmp_path, capsys):
    evil = tmp_path / "model_final.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "cfg": Path("/")}, evil)  # needs unpickling a Path
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(32, 32))
    rc = main(["predict", scene, "--checkpoint", str(evil), "--classes", "road", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].endswith(
        f"{evil} is not a safetensors or weights-only file; it would have to be unpickled, which aeroseg never "
        "does for files it did not write (it holds a pathlib.PosixPath object)"
    )
    assert "weights_only" not in err[0] and "Re-running" not in err[0]


def one_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_training_run_folder_is_its_final_model_and_an_unfinished_run_says_so(
    tmp_path, tiny_backbones, capsys
):
    run, unfinished = tmp_path / "run", tmp_path / "unfinished"
    build_tiny_model().save_pretrained(run / "final")
    shutil.copytree(run / "final", unfinished / "checkpoints" / "step_000002")
    (unfinished / "checkpoints" / "step_000001").mkdir()
    (unfinished / "config.yaml").write_text("steps: 4\n")
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(32, 32))
    common = ["predict", scene, "--classes", "road,tree", "--window", "32", "--quiet"]
    assert main([*common, "--checkpoint", str(run), "-o", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "scene.tif").is_file()
    assert main([*common, "--checkpoint", str(unfinished), "-o", str(tmp_path / "b")]) == 2
    assert one_error(capsys).endswith(
        f"{unfinished} is a training run without {unfinished / 'final'} (written when the training ends); pass "
        f"its latest checkpoint {unfinished / 'checkpoints' / 'step_000002'}, or resume the run"
    )
    assert not (tmp_path / "b").exists()
