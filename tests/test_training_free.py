"""The training-free segmenter: its pipeline on hand-built features, its dense CLIP path on tiny random
backbones, and its wiring (evaluate --preset, URL inputs, the demo command and its offline messages)."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from PIL import Image
from rasterio.transform import from_origin

import aeroseg
from aeroseg import build, hub
from aeroseg.cli import build_parser, demo, main
from aeroseg.data import SegmentationDataset
from aeroseg.errors import CheckpointError, UserError
from aeroseg.inference import sliding_window_scores
from aeroseg.training_free import TrainingFreeConfig, training_free
from aeroseg.training_free.regions import kmeans_regions

TINY = dict(clip_image_size=64, clip_crop=32, clip_stride=16)  # tiny CLIP: patch 8, native input 32
CLASSES = ["field", "forest", "background"]


def tiny(paths, guidance="sam", **overrides):
    kind = {"guidance_type": "sam2"} if guidance == "sam2" else {}
    source = "none" if guidance is None else str(paths[guidance])
    return build("training-free", clip=str(paths["clip"]), guidance=source, **{**TINY, **kind, **overrides})


def two_regions(boundary: int, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A red | green image split at column ``boundary`` and its class map (0 left, 1 right)."""
    image = torch.zeros(1, 3, size, size)
    image[:, 0, :, :boundary] = 0.9
    image[:, 1, :, boundary:] = 0.8
    truth = (torch.arange(size) >= boundary).long().expand(size, size)
    return image, truth


def constructed_features(model, cells: torch.Tensor) -> torch.Tensor:
    """Dense features whose score is 1 for class ``cells[i, j]`` (-1: all zero, no class) at cell (i, j)."""
    text = model.encode_text(CLASSES)  # (T, C)
    feats = text[cells.clamp_min(0)] * (cells >= 0)[..., None]  # (h, w, C)
    return feats.permute(2, 0, 1)[None]  # (1, C, h, w)


def accuracy(logits: torch.Tensor, truth: torch.Tensor) -> float:
    return (logits.argmax(1)[0] == truth).float().mean().item()


# ------------------------------------------------------------------------------------------ the model
def test_shapes_and_probabilities(tiny_backbones):
    model = tiny(tiny_backbones)
    assert isinstance(model.config, TrainingFreeConfig) and model.config.preset == "training-free"
    images = torch.rand(2, 3, 40, 56)
    feats = model.encode(images)
    logits = model.segment(feats, CLASSES)
    assert logits.shape == (2, 3, 40, 56) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits.sigmoid().sum(1), torch.ones(2, 40, 56), atol=1e-4, rtol=0)
    torch.testing.assert_close(model(images, CLASSES), logits)
    assert feats.regions is not None and feats.regions.max() < model.config.region_clusters
    # the inference code's protocol: encode + segment, sigmoid probabilities blended over windows
    scores = sliding_window_scores(model, images[0], CLASSES, window=32, overlap=0.25, batch_size=2)
    assert scores.shape == (3, 40, 56) and 0 <= scores.min() and scores.max() <= 1


@pytest.mark.parametrize("guidance", ["sam", "sam2", None])
def test_no_parameter_requires_grad(tiny_backbones, guidance):
    model = tiny(tiny_backbones, guidance)
    params = list(model.parameters())
    assert params and not any(p.requires_grad for p in params)
    assert (model.sam is None) == (guidance is None)
    model.train()
    assert not any(p.requires_grad for p in model.parameters())
    assert model(torch.rand(1, 3, 32, 32), CLASSES[:2]).shape == (1, 2, 32, 32)


def test_class_permutation_equivariance(tiny_backbones):
    model = tiny(tiny_backbones, background_threshold=0.4)
    feats = model.encode(torch.rand(1, 3, 48, 48))
    classes = ["field", "forest", "road", "background", "water"]
    perm = [3, 0, 4, 2, 1]
    logits = model.segment(feats, classes)
    permuted = model.segment(feats, [classes[i] for i in perm])
    torch.testing.assert_close(permuted, logits[:, perm], atol=1e-4, rtol=1e-4)


def test_joint_bilateral_upsampling_recovers_regions_between_cells(tiny_backbones, monkeypatch):
    """The class boundary lies inside a CLIP cell (column 27 of cell 3, columns 24–31): the image-guided
    upsampling puts it on the image edge, bilinear interpolation cannot."""
    model = tiny(tiny_backbones, guidance=None)
    image, truth = two_regions(27)
    h = model.backbone.grid_size  # 8 cells of 8 pixels
    cells = (torch.arange(h) * 8 + 4 >= 27).long().expand(h, h)  # each cell's class at its centre
    monkeypatch.setattr(model.backbone, "encode_dense", lambda images: constructed_features(model, cells))
    assert accuracy(model(image, CLASSES), truth) == 1.0
    model.config.upsampler = "bilinear"
    assert accuracy(model(image, CLASSES), truth) < 0.97


def test_sam_regions_correct_a_wrong_clip_cell(tiny_backbones, monkeypatch):
    model = tiny(tiny_backbones, region_clusters=2, region_mix=1.0, upsampler="bilinear")  # regions alone
    image, truth = two_regions(32)
    cells = (torch.arange(8) >= 4).long().repeat(8, 1)
    cells[2, 1] = 1  # CLIP is wrong in one cell of the left region
    monkeypatch.setattr(model.backbone, "encode_dense", lambda images: constructed_features(model, cells))
    sam = torch.zeros(1, 4, 16, 16)  # SAM's features: one vector per region
    sam[:, 0, :, :8] = 1
    sam[:, 1, :, 8:] = 1
    monkeypatch.setattr(model.sam, "forward", lambda images: sam)
    assert accuracy(model(image, CLASSES), truth) == 1.0
    model.config.region_mix = 0.0  # CLIP alone keeps the wrong cell
    assert accuracy(model(image, CLASSES), truth) < 1.0


def test_kmeans_regions_find_blocks():
    torch.manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    blocks = torch.zeros(12, 12, dtype=torch.long)
    blocks[:, 6:] = 1
    blocks[8:, :] = 2
    feats = directions[blocks] + 0.05 * torch.randn(12, 12, 8)
    feats = torch.nn.functional.normalize(feats, dim=-1).permute(2, 0, 1)[None]
    labels = kmeans_regions(feats, clusters=3, iterations=5)[0]
    pairs = set(zip(blocks.flatten().tolist(), labels.flatten().tolist(), strict=True))
    assert len(pairs) == 3  # one cluster per block


def test_background_threshold(tiny_backbones, monkeypatch):
    model = tiny(tiny_backbones, guidance=None, background_threshold=0.4)
    image, truth = two_regions(32)
    cells = torch.where(torch.arange(8) < 4, 0, -1).repeat(8, 1)  # right half: no class at all
    monkeypatch.setattr(model.backbone, "encode_dense", lambda images: constructed_features(model, cells))
    probs = model(image, CLASSES).sigmoid()[0]
    assert (probs.argmax(0)[:, :28] == 0).all()  # field where CLIP is sure
    assert (probs.argmax(0)[:, 36:] == 2).all()  # background where no class reaches 0.4 (all are 1/3)
    torch.testing.assert_close(probs[2, :, 36:], torch.full((64, 28), 2 / 3), atol=1e-3, rtol=0)
    model.config.background_threshold = 0.0
    assert (model(image, CLASSES).argmax(1)[0, :, 36:] != 2).all()  # a tie, broken by the first class


# ------------------------------------------------------------------------------- dense CLIP features
def test_cls_bias_subtracts_the_global_embedding(tiny_backbones):
    plain = tiny(tiny_backbones, guidance=None, clip_image_size=32, clip_crop=0, cls_bias=0.0)
    biased = tiny(tiny_backbones, guidance=None, clip_image_size=32, clip_crop=0, cls_bias=0.3)
    image = torch.rand(1, 3, 32, 32)
    diff = biased.backbone.encode_dense(image) - plain.backbone.encode_dense(image)  # (1, C, 4, 4)
    tokens = plain.backbone._dense_tokens((image - plain.backbone.mean) / plain.backbone.std)[0]
    cls = torch.nn.functional.normalize(tokens[0, 0], dim=0)  # the unit [CLS] embedding
    torch.testing.assert_close(diff, -0.3 * cls[None, :, None, None].expand_as(diff), atol=1e-5, rtol=0)


def test_crops_are_stitched_in_place(tiny_backbones):
    """Four non-overlapping crops of a 64² input: the top-left quarter equals that quarter alone."""
    whole = tiny(tiny_backbones, guidance=None, clip_image_size=64, clip_crop=32, clip_stride=32)
    quarter = tiny(tiny_backbones, guidance=None, clip_image_size=32, clip_crop=0)
    image = torch.rand(1, 3, 64, 64)
    grid = whole.backbone.encode_dense(image)  # (1, C, 8, 8)
    torch.testing.assert_close(grid[..., :4, :4], quarter.backbone.encode_dense(image[..., :32, :32]))


def test_four_rotations_make_features_rotation_equivariant(tiny_backbones):
    model = tiny(tiny_backbones, guidance=None, rotations=(0, 90, 180, 270))
    image = torch.rand(1, 3, 64, 64)
    rotated = model.backbone.encode_dense(torch.rot90(image, 1, (2, 3)))
    torch.testing.assert_close(rotated, torch.rot90(model.backbone.encode_dense(image), 1, (2, 3)))


@pytest.mark.parametrize("attention", ["qq+kk+vv", "qq+kk", "qq", "kk", "vv", "identity"])
@pytest.mark.parametrize("residual", [False, True])
def test_last_block_variants(tiny_backbones, attention, residual):
    model = tiny(tiny_backbones, guidance=None, last_block_attention=attention, last_block_residual=residual)
    feats = model.backbone.encode_dense(torch.rand(1, 3, 48, 48))
    assert feats.shape == (1, 16, 8, 8) and torch.isfinite(feats).all()


def test_last_block_sums_the_softmaxes_as_the_reference(tiny_backbones):
    """SegEarth-OV (and SCLIP) add the softmaxes of q·qᵀ, k·kᵀ, v·vᵀ before the output projection; a mean
    would differ by (1 - 1/3) of the attention output, which the projection's bias keeps visible."""
    model = tiny(tiny_backbones, guidance=None, last_block_attention="qq+kk+vv")
    layer = model.backbone.clip.vision_model.encoder.layers[-1]
    attn = layer.self_attn
    with torch.no_grad():  # real CLIP weights have a non-zero bias; the random init has none
        attn.out_proj.bias.copy_(torch.randn(attn.embed_dim, generator=torch.Generator().manual_seed(0)))
    x = torch.randn(2, 17, attn.embed_dim)
    y = layer.layer_norm1(x)
    q, k, v = (
        p(y).view(2, 17, attn.num_heads, -1).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj)
    )
    softmaxes = [(a @ a.transpose(-1, -2) * attn.head_dim**-0.5).softmax(-1) for a in (q, k, v)]

    def project(weights):
        return attn.out_proj((weights @ v).transpose(1, 2).reshape(2, 17, -1))

    reference = project(softmaxes[0] + softmaxes[1] + softmaxes[2])
    mean = project((softmaxes[0] + softmaxes[1] + softmaxes[2]) / 3)
    ours = model.backbone._last_block(layer, x)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    # the two differ, and not by a scale: mean = (reference - b) / 3 + b
    assert not torch.allclose(
        model.backbone.clip.vision_model.post_layernorm(ours),
        model.backbone.clip.vision_model.post_layernorm(mean),
        atol=1e-3,
    )
    torch.testing.assert_close(mean, (reference - attn.out_proj.bias) / 3 + attn.out_proj.bias)


def test_last_block_options_take_effect(tiny_backbones):
    image = torch.rand(1, 3, 32, 32)
    variants = [("qq+kk+vv", False), ("qq", False), ("identity", False), ("identity", True)]
    feats = [
        tiny(
            tiny_backbones, guidance=None, last_block_attention=a, last_block_residual=r
        ).backbone.encode_dense(image)
        for a, r in variants
    ]
    for i in range(len(feats)):
        for j in range(i):
            assert not torch.allclose(feats[i], feats[j], atol=1e-4), (variants[i], variants[j])


def test_config_validation_and_preset(tiny_backbones):
    assert training_free() == TrainingFreeConfig()
    assert TrainingFreeConfig.from_dict(training_free().to_dict()) == training_free()
    with pytest.raises(ValueError, match="background_threshold"):
        training_free().replace(background_threshold=0.7)
    with pytest.raises(UserError, match="unknown TrainingFreeConfig field"):
        build("training-free", clip=str(tiny_backbones["clip"]), guidance="none", no_such_field=1)
    random = build("training-free", pretrained=False, guidance="none", clip_crop=224)  # offline, paper-size
    assert random.backbone.grid_size == 28 and random.sam is None


# ------------------------------------------------------------------------------ offline and failures
def test_unreachable_hub_id_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="--clip DIR") as error:
        build("training-free", clip="aeroseg-test/no-such-clip", guidance="none")
    assert "aeroseg-test/no-such-clip" in str(error.value) and "\n" not in str(error.value)


def run_demo(argv: list[str]) -> int:
    """``aeroseg demo ARGV`` as the CLI runs it (the lead registers the name in aeroseg.cli)."""
    parser = build_parser({"demo": ("aeroseg.cli.demo", "demo")})
    args = parser.parse_args(["demo", *argv])
    try:
        return args._run(args)
    except UserError as error:
        print(f"aeroseg demo: error: {error}", file=sys.stderr)
        return 2


def test_demo_offline_messages(tmp_path, tiny_backbones, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    closed = free_port()  # nothing listens there
    monkeypatch.setattr(demo, "SAMPLE", demo.Sample(f"http://127.0.0.1:{closed}/scene.tif", 64, 1, "s"))
    assert run_demo(["--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot download the sample image" in err and "--image FILE" in err and len(err.splitlines()) == 1
    missing = ["--image", str(tmp_path / "missing.tif"), "--clip", str(tiny_backbones["clip"])]
    assert run_demo([*missing, "--guidance", "none", "-o", str(tmp_path / "out"), "--quiet"]) == 2
    assert "missing.tif" in capsys.readouterr().err
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    argv = ["--image", str(image), "--clip", "aeroseg-test/no-such-clip", "-o", str(tmp_path / "out")]
    assert run_demo([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "aeroseg-test/no-such-clip" in err and "--clip DIR" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------- URL inputs, the demo
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on the loopback address. The server runs in its own process: GDAL's
    curl reads hold the GIL, so a server thread of this process could not answer them."""
    folder = tmp_path / "www"
    folder.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail("the test HTTP server did not start")
            time.sleep(0.05)
    yield folder, f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


def write_geotiff(path: Path, height: int, width: int) -> None:
    rgb = np.zeros((3, height, width), np.uint8)
    rgb[0, :, : width // 2] = 200
    rgb[1, :, width // 2 :] = 180
    profile = dict(driver="GTiff", height=height, width=width, count=3, dtype="uint8", crs="EPSG:32620")
    with rasterio.open(path, "w", transform=from_origin(500000, 1700000, 0.5, 0.5), **profile) as ds:
        ds.write(rgb)


def test_url_input_is_read_over_http(tiny_backbones, http_folder):
    folder, base = http_folder
    write_geotiff(folder / "scene.tif", 40, 72)
    model = tiny(tiny_backbones)
    result = aeroseg.predict(model, f"{base}/scene.tif", ["field", "forest"], window=32)
    assert result.class_map.shape == (40, 72) and result.class_names == ["field", "forest"]
    assert set(np.unique(result.class_map)) <= {0, 1}


def test_demo_downloads_caches_and_segments_the_sample(tmp_path, tiny_backbones, http_folder, monkeypatch):
    folder, base = http_folder
    write_geotiff(folder / "scene.tif", 96, 128)
    monkeypatch.setattr(demo, "SAMPLE", demo.Sample(f"{base}/scene.tif", 32, 2, "sample"))
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = ["--cache", str(cache), "-o", str(out), "--clip", str(tiny_backbones["clip"])]
    argv += ["--guidance", str(tiny_backbones["sam"]), "--classes", "field,forest|trees", "--window", "64"]
    assert run_demo([*argv, "--quiet"]) == 0
    cached = demo.fetch_sample(demo.SAMPLE, cache)  # the central 64² source pixels, decimated by 2
    with rasterio.open(cached) as ds:
        assert ds.shape == (32, 32) and ds.crs == "EPSG:32620"
        assert ds.transform.a == 1.0 and ds.transform.c == 500000 + 32 * 0.5
    with rasterio.open(out / "sample.tif") as ds:
        assert ds.shape == (32, 32) and ds.crs == "EPSG:32620"
        assert set(np.unique(ds.read(1))) <= {0, 1}
    assert Image.open(out / "sample_overlay.png").size[0] >= 32
    (folder / "scene.tif").unlink()  # cached: a second run needs no network
    assert demo.fetch_sample(demo.SAMPLE, cache) == cached


def test_demo_records_the_settings_that_predict_compares(tmp_path, tiny_backbones):
    write_geotiff(tmp_path / "scene.tif", 40, 72)
    out, summary = tmp_path / "out", tmp_path / "run.json"
    same = [
        "--classes",
        "field,forest",
        "--window",
        "32",
        "--clip",
        str(tiny_backbones["clip"]),
        "--guidance",
        "none",
    ]
    assert run_demo(["--image", str(tmp_path / "scene.tif"), "-o", str(out), *same, "--quiet"]) == 0
    argv = ["predict", str(tmp_path / "scene.tif"), "-o", str(out), "--overlay", "--json", str(summary)]
    assert main([*argv, *same, "--quiet"]) == 0
    assert json.loads(summary.read_text())["skipped"] == 1  # the demo's files, with predict's settings


def test_predict_without_checkpoint_runs_the_training_free_model(tmp_path, tiny_backbones, http_folder):
    folder, base = http_folder
    write_geotiff(folder / "scene.tif", 40, 72)
    out = tmp_path / "out"
    argv = ["predict", f"{base}/scene.tif", "--classes", "field,forest", "-o", str(out), "--window", "32"]
    weights = ["--clip", str(tiny_backbones["clip"]), "--guidance", str(tiny_backbones["sam"])]
    assert main([*argv, *weights, "--quiet", "--device", "cpu"]) == 0
    with rasterio.open(out / "scene.tif") as ds:
        assert ds.shape == (40, 72) and ds.crs == "EPSG:32620"


def test_predict_weight_flags_and_offline_hub(tmp_path, tiny_backbones, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    argv = ["predict", str(image), "--classes", "road", "-o", str(tmp_path / "out"), "--quiet"]
    assert main([*argv, "--checkpoint", str(tmp_path), "--clip", str(tiny_backbones["clip"])]) == 2
    assert "--clip and --guidance" in capsys.readouterr().err
    assert main([*argv, "--clip", str(tiny_backbones["clip"]), "--guidance", "aeroseg-test/no-such-sam"]) == 2
    err = capsys.readouterr().err.strip()
    assert "aeroseg-test/no-such-sam" in err and "--guidance DIR" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------ evaluate
def test_evaluate_preset_training_free(tmp_path, tiny_backbones):
    data = tmp_path / "toy"
    info = {"name": "toy", "classes": ["field", "forest"], "unseen": ["forest"], "ignore_index": 255}
    for split in ("train", "val"):
        (data / split / "images").mkdir(parents=True)
        (data / split / "masks").mkdir(parents=True)
    (data / "dataset.yaml").write_text(yaml.safe_dump(info))
    image, truth = two_regions(16, size=32)
    Image.fromarray((image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(
        data / "val/images/a.png"
    )
    Image.fromarray(truth.numpy().astype(np.uint8)).save(data / "val/masks/a.png")
    sample = SegmentationDataset(data, split="val")[0]
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--data", str(data), "--preset", "training-free", "--json", str(out)]
    argv += ["--clip", str(tiny_backbones["clip"]), "--guidance", "none", "--workers", "0", "--quiet"]
    assert main([*argv, "--device", "cpu"]) == 0
    document = json.loads(out.read_text())
    assert document["method"] == "training-free" and document["checkpoint"] is None
    assert document["clip"] == str(tiny_backbones["clip"]) and document["guidance"] is None
    model = build("training-free", clip=str(tiny_backbones["clip"]), guidance="none")  # the protocol by hand
    pred = model(sample["image"][None], ["field", "forest"]).argmax(1)[0]
    expected = np.zeros((2, 2), np.int64)
    np.add.at(expected, (sample["mask"].numpy().ravel(), pred.numpy().ravel()), 1)
    assert document["confusion_matrix"] == expected.tolist()
    assert main(["evaluate", "--data", str(data), "--clip", "x"]) == 2  # --clip needs --preset


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AEROSEG_CACHE", str(tmp_path / "a"))
    assert hub.cache_dir() == tmp_path / "a" and hub.cache_dir(str(tmp_path / "b")) == tmp_path / "b"
    monkeypatch.delenv("AEROSEG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "aeroseg"
