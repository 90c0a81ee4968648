"""The SED converter: what it recognises, what it refuses (one line), and the open_clip ConvNeXt CLIP files."""

import pytest
import torch
from safetensors.torch import save_file

from aeroseg.convert.convnext_clip import infer_architecture, is_convnext_clip
from aeroseg.convert.sed import CLIP_PREFIX, load_sed, recognise
from aeroseg.errors import CheckpointError
from aeroseg.sed.convnext_clip import HUB_FILES, load_architecture, load_towers
from tests.helpers.sed_fixture import clip_size, official_state, write_checkpoint


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_sed(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_recognise_tells_sed_from_other_models():
    state = official_state()
    assert recognise(state)
    assert not recognise({k: v for k, v in state.items() if k.startswith(CLIP_PREFIX)})
    catseg = {
        "sem_seg_head.predictor.clip_model.visual.conv1.weight": torch.zeros(1),
        "sem_seg_head.predictor.transformer.conv1.weight": torch.zeros(1),
    }
    assert not recognise(catseg)


def test_a_catseg_file_is_refused_saying_what_it_looks_like(tmp_path):
    path = tmp_path / "model_base.pth"
    torch.save({"model": {"sem_seg_head.predictor.clip_model.visual.conv1.weight": torch.zeros(2)}}, path)
    assert "looks like a CAT-Seg / OVRS checkpoint" in one_line_error(path)


def test_a_file_with_a_foreign_tensor_names_the_first_unexpected_and_missing(tmp_path):
    state = official_state()
    state.pop("sem_seg_head.predictor.transformer.decoder2.cnext.gamma")
    state["sem_seg_head.predictor.transformer.decoder4.cnext.gamma"] = torch.zeros(3)
    path = tmp_path / "edited.pth"
    torch.save({"model": state}, path)
    message = one_line_error(path, clip_image_size=clip_size())
    assert "first unexpected tensor 'sem_seg_head.predictor.transformer.decoder4.cnext.gamma'" in message
    assert "first missing tensor 'decoder.stages.1.aggregation.spatial.gamma'" in message


def test_a_clip_tensor_missing_is_named(tmp_path):
    state = official_state()
    state.pop(f"{CLIP_PREFIX}visual.trunk.stages.2.blocks.1.mlp.fc2.bias")
    path = tmp_path / "edited.pth"
    torch.save({"model": state}, path)
    message = one_line_error(path)
    assert "first missing 'trunk.encoder.stages.2.layers.1.pwconv2.bias'" in message


def test_pickled_objects_are_refused(tmp_path):
    from pathlib import Path

    path = tmp_path / "model_final.pth"
    torch.save({"model": official_state(), "cfg": Path("/")}, path)  # needs unpickling a Path
    assert "it would have to be unpickled, which aeroseg never does" in one_line_error(path)


def test_the_architecture_is_read_from_the_shapes(tmp_path):
    model = load_sed(write_checkpoint(tmp_path / "model_final.pth"), clip_image_size=clip_size())
    config = model.config
    assert config.preset == "sed" and config.clip == str(tmp_path / "model_final.pth")
    assert config.decoder_guidance_dims == (64, 32, 16) and config.decoder_dims == (64, 32, 16)
    assert config.decoder_guidance_proj_dims == (32, 16, 8) and config.kernel_sizes == (9, 9, 9)
    assert model.encoder.widths == (16, 32, 64, 128) and model.clip_arch["embed_dim"] == 32
    assert model.clip_arch["vision"]["depths"] == [1, 1, 2, 1]
    assert model.text_encoder.clip.config.num_hidden_layers == 2
    reloaded = load_sed(
        tmp_path / "model_final.pth", preset="sed-large", early_rejection=True, clip_image_size=320
    )
    assert reloaded.config.preset == "sed-large" and reloaded.config.early_rejection
    assert reloaded.config.decoder_guidance_dims == (64, 32, 16)  # the file's, not the preset's


def test_an_open_clip_convnext_clip_file_loads_as_the_towers_of_sed(tmp_path):
    """A hub repository's open_clip file (no prefix), as ``clip:`` of a SED config."""
    state = official_state()
    clip = {k[len(CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    assert is_convnext_clip(clip)
    save_file(clip, str(tmp_path / HUB_FILES[0]))
    towers = load_towers(str(tmp_path), arch="clip-convnext-base-w-320")
    model = load_sed(write_checkpoint(tmp_path / "sed.pth"), clip_image_size=clip_size())
    ours = {f"trunk.{k}": v for k, v in model.encoder.trunk.state_dict().items()}
    ours.update({f"head.{k}": v for k, v in model.encoder.head.state_dict().items()})
    ours.update({f"text.{k}": v for k, v in model.text_encoder.clip.state_dict().items()})
    theirs = towers.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert "looks like an open_clip ConvNeXt CLIP alone" in one_line_error(tmp_path / HUB_FILES[0])


def test_shapes_override_the_template_but_dropout_rates_come_from_it(tmp_path):
    state = {k[len(CLIP_PREFIX) :]: v for k, v in official_state("mlp").items() if k.startswith(CLIP_PREFIX)}
    arch = infer_architecture(state, tmp_path, load_architecture("clip-convnext-large-d-320"))
    assert arch["head"] == "mlp" and arch["head_dropout"] == 0.1 and arch["vision"]["drop_path_rate"] == 0.1
    assert arch["vision"]["hidden_sizes"] == [16, 32, 64, 128] and arch["text"]["hidden_size"] == 64


def test_a_missing_hub_model_is_one_line_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="cannot load CLIP ConvNeXt") as info:
        load_towers("laion/no-such-convnext", arch="clip-convnext-base-w-320")
    assert "\n" not in str(info.value)
