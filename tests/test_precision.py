"""Every precision the command line offers, on a CPU at tiny size: the model forward, ``aeroseg predict`` and
``aeroseg evaluate`` run and stay within the tolerance of docs/model.md ("Precision") of fp32; the parts the
precision rule keeps in fp32 are fp32 under autocast; ``auto`` resolves by the device's native bf16 and the
precision used is recorded in the outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
import yaml
from PIL import Image

import aeroseg.precision
from aeroseg.cli import main
from aeroseg.modeling.correlation import cosine
from aeroseg.modeling.guidance_encoder import _resize
from aeroseg.precision import CHOICES, autocast, fp32, keep_norms_fp32, resolve
from aeroseg.prediction.outputs import read_settings
from tests.helpers.tiny import build_tiny_model
from tests.test_predict import smooth_image
from tests.test_predict_inputs import write_geotiff

LOWER = ("bf16", "fp16")  # the autocast precisions; fp16 autocast runs on every CPU torch supports
# docs/model.md, Precision: the largest logit difference to fp32, relative to the largest fp32 logit; the largest
# probability difference; the share of pixels keeping the fp32 argmax on a tiny random model (margins ~0.02)
TOLERANCE = {"bf16": (0.05, 0.02, 0.9), "fp16": (0.01, 0.005, 0.98)}
CLASSES = "building,road,tree|forest,water"
# clip_image_size 32: a 4² correlation grid, so the SAM2 FPN maps (16², 8²) are shrunk with antialiasing
SHRINKING = dict(preset="aeroseg-sam2-hiera-b+", clip_image_size=32)


@pytest.fixture(scope="module")
def model():
    return build_tiny_model(**SHRINKING).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("precision") / "tiny"
    model.save_pretrained(path)
    return path


def _native(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(aeroseg.precision, "has_native_bf16", lambda device: native)


# ------------------------------------------------------------------------------------------- the helpers
@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_only_where_the_device_has_it_natively(monkeypatch, native, expected):
    _native(monkeypatch, native)
    assert resolve("auto", "cpu") == expected
    for precision in ("fp32", "bf16", "fp16"):  # asked for by name: used as asked
        assert resolve(precision, "cpu") == precision
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve("int8", "cpu")
    assert CHOICES == ("fp32", "bf16", "fp16", "auto")


def test_auto_on_this_machine_follows_its_bf16_support():
    native = aeroseg.precision.has_native_bf16("cpu")
    assert resolve("auto", "cpu") == ("bf16" if native else "fp32")


def test_fp32_turns_autocast_off_and_casts_the_inputs():
    layer = torch.nn.Linear(4, 4)

    @fp32
    def project(x, extra):
        return layer(x) + extra[0]

    x = torch.rand(2, 4, dtype=torch.bfloat16)
    with autocast("cpu", "bf16"):
        assert layer(x).dtype == torch.bfloat16  # autocast as usual outside
        assert project(x, [torch.ones(4, dtype=torch.bfloat16)]).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")  # and back on after


@pytest.mark.parametrize("precision", LOWER)
@pytest.mark.parametrize("mode", ["antialias", "area", "bilinear"])
def test_guidance_resize_runs_in_fp32_under_every_precision(precision, mode):
    """The regression of issue 28 item 14: the antialiased kernel has no bf16/fp16 version on a CPU."""
    x = torch.rand(1, 4, 16, 16)
    with autocast("cpu", precision):
        got = _resize(x.to(aeroseg.precision.dtype(precision)), 6, mode)
    assert got.dtype == torch.float32 and got.shape == (1, 4, 6, 6)
    torch.testing.assert_close(got, _resize(x, 6, mode), atol=0.01, rtol=0.01)


def test_norms_and_cosine_stay_fp32_under_bf16():
    norms = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    assert keep_norms_fp32(norms) == 1 and keep_norms_fp32(norms) == 0  # once
    image = torch.nn.functional.normalize(torch.rand(1, 2, 8, 3, 3), dim=2)
    text = torch.nn.functional.normalize(torch.rand(5, 2, 8), dim=-1)
    with autocast("cpu", "bf16"):
        assert norms(torch.rand(3, 8)).dtype == torch.float32
        similarity = cosine(image.bfloat16(), text.bfloat16())
    assert similarity.dtype == torch.float32 and similarity.shape == (1, 2, 2, 5, 3, 3)
    assert norms(torch.rand(3, 8)).dtype == torch.float32  # without autocast nothing changes


def test_the_model_keeps_the_rule_under_bf16(model):
    """Every norm, the resized guidance maps, the cosine of Eq. 3 (the correlation convolution's input) and the
    resized logits are fp32 under bf16 autocast; the matrix products are bf16."""
    seen: dict[str, list[torch.dtype]] = {"norm": [], "linear": []}

    def output(kind):
        return lambda module, args, out: seen[kind].append(out.dtype)

    hooks = [
        m.register_forward_hook(output("norm"))
        for m in model.modules()
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm))
    ]
    hooks += [
        m.register_forward_hook(output("linear")) for m in model.modules() if isinstance(m, torch.nn.Linear)
    ]
    cosines = []
    hooks.append(
        model.correlation.conv.register_forward_pre_hook(lambda m, args: cosines.append(args[0].dtype))
    )
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    try:
        with torch.inference_mode(), autocast("cpu", "bf16"):
            feats = model.encode(images)
            logits = model.segment(feats, ["a", "b", "c"])
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen["norm"]) > 10 and set(seen["norm"]) == {torch.float32}
    assert set(seen["linear"]) == {torch.bfloat16}
    assert cosines == [torch.float32] and feats.clip.dtype == torch.float32
    guidance = [feats.guidance.final, *feats.guidance.decoder]
    assert [g.dtype for g in guidance] == [torch.float32] * 3 and guidance[2].shape[
        -1
    ] == 8  # 16² shrunk to 8²
    assert logits.dtype == torch.float32


# ---------------------------------------------------------------------------------- every precision at tiny size
@pytest.mark.parametrize("preset", ["aeroseg", "aeroseg-sam2-hiera-b+", "baseline", "training-free"])
@pytest.mark.parametrize("precision", LOWER)
def test_forward_is_within_the_tolerance_of_fp32(preset, precision, tiny_backbones):
    if preset == "training-free":  # predict's default model (its own family: autocast's lists, fp32 logits)
        from tests.test_training_free import tiny

        model = tiny(tiny_backbones).eval()
    else:
        model = build_tiny_model(preset=preset, clip_image_size=32).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    classes = ["building", "road", "tree", "water", "car"]
    with torch.inference_mode():
        reference = model(images, classes)
        with autocast("cpu", precision):
            logits = model(images, classes)
    logit_tolerance, probability_tolerance, agreement = TOLERANCE[precision]
    assert (logits - reference).abs().max() <= logit_tolerance * reference.abs().max()
    assert (logits.sigmoid() - reference.sigmoid()).abs().max() <= probability_tolerance
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() >= agreement


def _predict(tmp_path, checkpoint, scene, precision, name):
    out, summary = tmp_path / name, tmp_path / f"{name}.json"
    argv = ["predict", str(scene), "--checkpoint", str(checkpoint), "--classes", CLASSES, "-o", str(out)]
    argv += ["--window", "64", "--device", "cpu", "--precision", precision, "--scores", "--quiet"]
    assert main([*argv, "--json", str(summary)]) == 0
    record = json.loads(summary.read_text())["images"][0]
    with rasterio.open(record["outputs"]["classes"]) as ds, rasterio.open(record["outputs"]["scores"]) as sc:
        return ds.read(1), sc.read(1), read_settings(out / "scene.tif"), json.loads(summary.read_text())


def test_predict_in_every_precision_records_it_and_stays_within_tolerance(tmp_path, checkpoint, monkeypatch):
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(72, 90, seed=6))
    ids, scores, settings, _ = _predict(tmp_path, checkpoint, scene, "fp32", "fp32")
    assert settings["precision"] == "fp32"
    for precision in LOWER:
        other_ids, other_scores, settings, summary = _predict(
            tmp_path, checkpoint, scene, precision, precision
        )
        assert settings["precision"] == precision and summary["settings"]["precision"] == precision
        _, probability_tolerance, agreement = TOLERANCE[precision]
        assert np.abs(other_scores - scores).max() <= probability_tolerance
        assert (other_ids == ids).mean() >= agreement
    for native, used in [(True, "bf16"), (False, "fp32")]:
        _native(monkeypatch, native)
        *_, settings, summary = _predict(tmp_path, checkpoint, scene, "auto", f"auto-{native}")
        assert settings["precision"] == used and summary["settings"]["precision"] == used  # never "auto"


def _dataset(root):
    root.mkdir()
    info = {"name": "toy", "classes": ["building", "road", "tree", "water"], "unseen": ["water"]}
    (root / "dataset.yaml").write_text(yaml.safe_dump({**info, "ignore_index": 255}))
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "masks").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(smooth_image(64, 64, seed=i).transpose(1, 2, 0)).save(
            root / "val" / "images" / f"{i}.png"
        )
        mask = np.random.default_rng(i).integers(0, 4, (64, 64)).astype(np.uint8)
        Image.fromarray(mask).save(root / "val" / "masks" / f"{i}.png")
    return root


def test_evaluate_in_every_precision_records_it_and_stays_within_tolerance(tmp_path, checkpoint, monkeypatch):
    data = _dataset(tmp_path / "toy")
    results = {}
    _native(monkeypatch, True)
    for precision in ("fp32", *LOWER, "auto"):
        out = tmp_path / f"{precision}.json"
        argv = ["evaluate", "--data", str(data), "--checkpoint", str(checkpoint), "--mode", "whole"]
        assert (
            main(
                [
                    *argv,
                    "--device",
                    "cpu",
                    "--workers",
                    "0",
                    "--quiet",
                    "--precision",
                    precision,
                    "--json",
                    str(out),
                ]
            )
            == 0
        )
        results[precision] = json.loads(out.read_text())
    assert {p: r["precision"] for p, r in results.items()} == {
        "fp32": "fp32",
        "bf16": "bf16",
        "fp16": "fp16",
        "auto": "bf16",
    }
    reference = np.array(results["fp32"]["confusion_matrix"])
    for precision in LOWER:
        moved = np.abs(np.array(results[precision]["confusion_matrix"]) - reference).sum() / 2
        assert (
            moved <= (1 - TOLERANCE[precision][2]) * reference.sum()
        )  # pixels whose class changed, at least


def test_evaluate_refuses_a_precision_for_predictions(tmp_path, capsys):
    data = _dataset(tmp_path / "toy")
    (tmp_path / "preds").mkdir()
    argv = ["evaluate", "--data", str(data), "--predictions", str(tmp_path / "preds"), "--precision", "bf16"]
    assert main(argv) == 2
    assert "--precision applies to a model run" in capsys.readouterr().err


def test_serve_records_the_precision_it_runs_in(tmp_path, checkpoint, monkeypatch):
    pytest.importorskip("fastapi")
    from tests.test_serve import authorised, run, serve

    _native(monkeypatch, True)
    scene = write_geotiff(tmp_path / "scene.tif", smooth_image(64, 80))
    with serve(str(scene), "--checkpoint", str(checkpoint), "--window", "64", "--precision", "auto") as (
        app,
        _,
    ):
        client = authorised(app)
        state = client.get("/api/state").json()
        assert state["precision"] == "bf16"
        job = run(client, raster=state["rasters"][0]["id"], scope="image")
        assert job["precision"] == "bf16"
