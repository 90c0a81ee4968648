"""Every model enters through the registry: each preset builds from it on tiny backbones and answers the
segmenter interface; trained presets are refused without a checkpoint; overrides reach every preset."""

from __future__ import annotations

import json

import pytest
import torch

import aeroseg
from aeroseg import fingerprint, registry
from aeroseg.cli import main
from aeroseg.errors import UserError
from aeroseg.prediction.settings import model_identity
from aeroseg.registry import ModelRequest
from aeroseg.segmenter import Segmenter
from tests.helpers import tiny_families
from tests.helpers.tiny import tiny_overrides

TINY_TRAINING_FREE = dict(clip_image_size=64, clip_crop=32, clip_stride=16)
TINY_SEGEARTH_OV = dict(simfeatup="none", slide_crop=32, slide_stride=16, image_size=64)


def tiny_sources(name: str, paths) -> dict:
    """Overrides that put preset ``name`` on the tiny backbones of ``tests/helpers/tiny.py``."""
    family = registry.PRESETS[name].family
    if family is registry.AEROSEG:
        return tiny_overrides(name, paths)
    if family is registry.TRAINING_FREE:
        return dict(TINY_TRAINING_FREE, clip=str(paths["clip"]), guidance=str(paths["sam"]))
    if family is registry.SEGEARTH_OV:
        return dict(TINY_SEGEARTH_OV, clip=str(paths["clip"]))
    if family.name in tiny_families.FAMILIES:
        return tiny_families.overrides(family.name)
    return dict(sam3=str(paths["sam3"]))


@pytest.mark.parametrize("name", registry.presets())
def test_every_preset_builds_through_the_registry_and_segments(name, tiny_backbones):
    torch.manual_seed(0)
    model = aeroseg.build(name, **tiny_sources(name, tiny_backbones)).eval()
    assert isinstance(model, Segmenter) and model.config.preset == name
    assert isinstance(model, registry.PRESETS[name].family.model_class())
    images = torch.rand(2, 3, 48, 40)
    with torch.inference_mode():
        feats = model.encode(images)
        probs = model.probabilities(feats, ["road", "water", "tree"])
        again = model.probabilities(feats, ["tree", "water", "road"])  # another class list, the same encoding
    assert probs.shape == (2, 3, 48, 40) and probs.dtype == torch.float32
    assert 0 <= float(probs.min()) and float(probs.max()) <= 1
    torch.testing.assert_close(again, probs[:, [2, 1, 0]], rtol=1e-4, atol=1e-5)


def test_the_table_names_every_family_and_what_it_needs():
    assert set(registry.presets()) == set(registry.PRESETS)
    assert registry.untrained_presets() == ["training-free", "segearth-ov", "segearth-ov3"]
    for preset in registry.PRESETS.values():
        assert preset.config().preset == preset.name  # the config records its preset
        assert preset.family.trains == (preset.family.criterion is not None)
        for field in preset.family.weights:
            assert hasattr(preset.config(), field)


def test_presets_command_prints_family_paper_and_checkpoint_need(capsys):
    assert main(["presets"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "needs a checkpoint" in rows["aeroseg"] and "Table 3" in rows["baseline"]
    assert "no checkpoint" in rows["segearth-ov"] and "segearth-ov" in rows["segearth-ov"].split()[1]


@pytest.mark.parametrize("verb", ["predict", "evaluate", "serve"])
def test_a_trained_preset_without_checkpoint_is_refused(verb, tmp_path, capsys):
    argv = {
        "predict": ["predict", str(tmp_path / "x.tif"), "--classes", "a,b", "-o", str(tmp_path / "out")],
        "evaluate": ["evaluate", "--data", str(tmp_path)],
        "serve": ["serve", "--root", str(tmp_path), "--port", "0"],
    }[verb]
    (tmp_path / "x.tif").write_bytes(b"")
    if verb == "evaluate":
        from tests.test_evaluate import make_dataset

        argv[2] = str(make_dataset(tmp_path / "data"))
    assert main([*argv, "--preset", "aeroseg", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "`aeroseg` needs a trained checkpoint: pass --checkpoint, or use a training-free preset "
        "(training-free, segearth-ov, segearth-ov3)"
    ), err


def test_weights_a_preset_does_not_take_and_checkpoint_weights_are_refused(tiny_backbones):
    with pytest.raises(UserError, match="--sam3 does not apply to --preset training-free"):
        registry.segmenter(ModelRequest(preset="training-free", weights={"sam3": "x"}))
    with pytest.raises(UserError, match="a checkpoint carries its own"):
        registry.segmenter(ModelRequest(checkpoint="somewhere", weights={"clip": "x"}))


def test_config_file_overrides_reach_every_preset(tmp_path, tiny_backbones):
    """``evaluate --preset training-free --config X`` builds the model X describes (it used to ignore X)."""
    from aeroseg.cli import evaluate

    config = tmp_path / "settings.yaml"
    config.write_text("preset: training-free\nmodel:\n  logit_scale: 7.5\n  region_clusters: 3\n")
    parser = __import__("argparse").ArgumentParser()
    evaluate.add_arguments(parser)
    args = parser.parse_args(
        ["--data", str(tmp_path), "--preset", "training-free", "--config", str(config), "--guidance", "none",
         "--clip", str(tiny_backbones["clip"]), "--device", "cpu"]
    )  # fmt: skip
    model = evaluate.load_model(args, "cpu")
    assert model.config.logit_scale == 7.5 and model.config.region_clusters == 3
    assert model.config.guidance_type == "none"
    other = tmp_path / "other.yaml"
    other.write_text("preset: segearth-ov\nmodel:\n  logit_scale: 1.0\n")
    with pytest.raises(UserError, match="is not a training-free file"):
        evaluate.load_model(
            parser.parse_args(["--data", ".", "--preset", "training-free", "--config", str(other)]), "cpu"
        )


def test_load_finds_the_family_of_a_folder_a_run_and_a_file_inside(tmp_path, tiny_backbones):
    from tests.helpers.tiny import build_tiny_model

    model = build_tiny_model().eval()
    model.save_pretrained(tmp_path / "run" / "final")
    for source in (tmp_path / "run", tmp_path / "run" / "final", tmp_path / "run" / "final" / "config.json"):
        loaded = registry.load(source)
        assert type(loaded) is type(model) and not loaded.training
    assert registry.family(ModelRequest(checkpoint=str(tmp_path / "run"))) is registry.AEROSEG
    assert registry.window(ModelRequest(checkpoint=str(tmp_path / "run"))) == model.window
    assert json.loads((tmp_path / "run" / "final" / "config.json").read_text())["format"] == "aeroseg"


def test_identity_resolves_paths(tmp_path, monkeypatch):
    (tmp_path / "clip").mkdir()
    monkeypatch.chdir(tmp_path)
    relative = model_identity(ModelRequest(preset="training-free", weights={"clip": "clip"}))
    absolute = model_identity(ModelRequest(preset="training-free", weights={"clip": str(tmp_path / "clip")}))
    assert relative == absolute
    assert model_identity(ModelRequest(preset="training-free", overrides={"logit_scale": 2.0})) != (
        model_identity(ModelRequest(preset="training-free"))
    )


def test_large_weights_are_hashed_once_then_read_from_the_digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AEROSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fingerprint, "CACHED_BYTES", 1)  # every file counts as large
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights" * 100)
    first = fingerprint.weights_digest(weights)
    assert len(json.loads((tmp_path / "cache" / "digests.json").read_text())) == 1

    def no_read(path, size):
        raise AssertionError("unchanged weights were read again")

    hash_file = fingerprint._hash
    monkeypatch.setattr(fingerprint, "_hash", no_read)
    assert fingerprint.weights_digest(weights) == first
    monkeypatch.setattr(fingerprint, "_hash", hash_file)
    weights.write_bytes(b"Weights" * 100)  # other bytes: another digest
    assert fingerprint.weights_digest(weights) not in (first, None)
