"""CLIP text as upstream: the activation each file was trained with, OpenAI's text cleaning, and the tokenizer
that travels with a model."""

import json
import shutil

import pytest
import torch
from transformers import CLIPModel, CLIPTokenizer

import aeroseg
from aeroseg import AerOSeg
from aeroseg.backbones import load_clip
from aeroseg.convert.tokenizer import _vocab_and_merges, clean_text, clip_tokenizer
from aeroseg.registry import preset_config
from tests.helpers import original_formats as orig
from tests.helpers.tiny import tiny_overrides


@pytest.mark.parametrize(
    "text, cleaned",
    [
        ("children’s playground", "children's playground"),  # ftfy straightens quotes
        ("road &amp; rail", "road & rail"),
        ("tank &amp;amp; silo", "tank & silo"),  # OpenAI unescapes twice
        ("  bare \t soil\n", "bare soil"),
        ("cafÃ©", "café"),  # mojibake fixed
    ],
)
def test_text_is_cleaned_as_openai_does(text, cleaned):
    assert clean_text(text) == cleaned


def test_prompts_tokenise_as_upstream(tiny_backbones):
    model = aeroseg.build("cat-seg", **tiny_overrides("cat-seg", tiny_backbones)).eval()
    with torch.no_grad():
        curly = model.encode_text(["children’s playground", "road &amp; rail"])
        plain = model.encode_text(["children's playground", "road & rail"])
    torch.testing.assert_close(curly, plain, rtol=0, atol=0)
    assert model.config.prompt_templates == ("A photo of a {} in the scene",)


@pytest.mark.parametrize("activation", ["gelu", "quick_gelu"])
def test_activation_field_reaches_every_clip_source(tiny_backbones, tmp_path, activation):
    file = tmp_path / "open_clip_model.safetensors"
    orig.save_safetensors(orig.openai_clip_state_dict(), file)
    for source in (str(tiny_backbones["clip"]), str(file)):
        clip, _ = load_clip(source, arch="clip-vit-b-16", activation=activation)
        mlps = [m for m in clip.modules() if hasattr(m, "activation_fn") and hasattr(m, "fc1")]
        assert (
            mlps and clip.config.vision_config.hidden_act == clip.config.text_config.hidden_act == activation
        )
        x = torch.linspace(-3, 3, 7)
        expected = x * torch.sigmoid(1.702 * x) if activation == "quick_gelu" else torch.nn.functional.gelu(x)
        for mlp in mlps:
            torch.testing.assert_close(mlp.activation_fn(x), expected)
    clip, _ = load_clip(str(file), arch="clip-vit-b-16")  # auto: an open_clip file without -quickgelu
    assert clip.config.vision_config.hidden_act == "gelu"


def test_remote_sensing_clips_use_the_activation_they_were_trained_with():
    assert preset_config("aeroseg-georsclip").clip_activation == "quick_gelu"
    assert preset_config("aeroseg-skyclip").clip_activation == "quick_gelu"
    assert preset_config("aeroseg").clip_activation == "auto"  # a transformers CLIP says it in config.json


def _other_vocabulary() -> CLIPTokenizer:
    """OpenAI's vocabulary with the ids of two tokens swapped: the same text, other token ids."""
    vocab, merges = _vocab_and_merges()
    vocab = dict(vocab)
    vocab["tree</w>"], vocab["road</w>"] = vocab["road</w>"], vocab["tree</w>"]
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=77)


def test_a_clip_directory_tokenizer_is_used_and_travels_with_the_checkpoint(tiny_backbones, tmp_path):
    clip_dir = tmp_path / "clip"
    shutil.copytree(tiny_backbones["clip"], clip_dir)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        (clip_dir / name).unlink(missing_ok=True)
    other = _other_vocabulary()
    other.save_pretrained(clip_dir)
    ids = other("a tree").input_ids
    assert ids != clip_tokenizer()("a tree").input_ids

    model = aeroseg.build("cat-seg", **{**tiny_overrides("cat-seg", tiny_backbones), "clip": str(clip_dir)})
    assert model.backbone.tokenizer("a tree").input_ids == ids
    model.save_pretrained(tmp_path / "ckpt")
    reloaded = AerOSeg.from_pretrained(tmp_path / "ckpt")
    assert reloaded.backbone.tokenizer("a tree").input_ids == ids
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded.encode_text(["tree"]), model.encode_text(["tree"]), rtol=1e-5, atol=1e-6
        )


def test_a_directory_with_only_vocab_and_merges_uses_them(tiny_backbones, tmp_path):
    """The files OpenAI-era CLIP repositories on the hub carry (no tokenizer.json)."""
    clip_dir = tmp_path / "clip"
    CLIPModel.from_pretrained(tiny_backbones["clip"]).save_pretrained(clip_dir)
    vocab, merges = _vocab_and_merges()
    vocab = dict(vocab)
    vocab["tree</w>"], vocab["road</w>"] = vocab["road</w>"], vocab["tree</w>"]
    (clip_dir / "vocab.json").write_text(json.dumps(vocab))
    (clip_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    _, tokenizer = load_clip(str(clip_dir), arch="clip-vit-b-16")
    assert tokenizer("a tree").input_ids == _other_vocabulary()("a tree").input_ids
