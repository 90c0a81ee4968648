"""``aeroseg bench`` on the tiny model (--short), and the instruments it is built from."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from aeroseg import measure
from aeroseg._tiny import IMAGE_SIZE, build_tiny
from aeroseg.cli import bench, main
from aeroseg.precision import autocast


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of a machine with native bf16 (bf16 is emulated on this one, but measured as there)."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(measure, "has_native_bf16", lambda device: True)
        assert main(["bench", "--short", "--quiet", "--repeats", "1", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_short_report_keys_and_values(report):
    for key in (
        "seconds",
        "gflop",
        "gemm_peak_gflops",
        "fraction_of_peak",
        "bf16_speedup",
        "bf16_argmax_agreement",
    ):
        assert key in report, key
    assert report["gemm_peak_gflops"]["fp32"] > 0 and report["gemm_peak_gflops"]["bf16"] > 0
    assert report["gemm_peak_gflops"]["fp32"] == max(report["gemm_peak_fp32_samples"])
    assert report["gflop"] > 0 and report["seconds"] > 0
    rate = report["gflop"] / report["seconds"]
    assert report["fraction_of_peak"] == pytest.approx(rate / report["gemm_peak_gflops"]["fp32"])
    assert 0 <= report["bf16_argmax_agreement"] <= 1 and report["bf16_speedup"] > 0
    assert report["bf16_logits"]["median_logit_error"] >= 0 and report["bf16_logits"]["median_margin"] >= 0
    components = report["components"]
    assert set(components) == {*measure.COMPONENTS, "other"}
    assert sum(c["gflop"] for c in components.values()) == pytest.approx(report["gflop"])
    assert all(c["gflop"] > 0 and c["peak_mib"] > 0 for n, c in components.items() if n != "other")
    assert sum(c["seconds"] for c in components.values()) <= report["seconds"] * 1.001
    # rotations in one CLIP batch; every encoder (CLIP, text, SAM) runs once per forward
    assert report["checks"] == {"components_called_once": True, "clip_batch": 4}
    assert report["predict"]["windows"] == 4 and report["predict"]["megapixels_per_second"] > 0
    assert report["train_step"]["seconds"] > 0 and report["train_step"]["classes"] == 9
    assert report["machine"]["threads"] == torch.get_num_threads() and report["machine"]["cpu"]
    assert report["native_bf16"] is True and "bf16_not_measured" not in report
    for name, c in components.items():  # both precisions, each against its own peak
        assert c["bf16_seconds"] == report["bf16"]["components"][name]["seconds"]
        rate = c["gflop"] / c["bf16_seconds"] if c["bf16_seconds"] > 0 else 0.0
        assert c["bf16_fraction_of_peak"] == pytest.approx(rate / report["gemm_peak_gflops"]["bf16"])
    total = report["gflop"] / report["bf16"]["seconds"] / report["gemm_peak_gflops"]["bf16"]
    assert report["bf16_fraction_of_peak"] == pytest.approx(total)


def test_without_native_bf16_one_line_says_so_and_only_fp32_is_measured(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(measure, "has_native_bf16", lambda device: False)
    path = tmp_path / "bench.json"
    argv = ["bench", "--short", "--quiet", "--repeats", "1", "--skip", "predict,train", "--json", str(path)]
    assert main(argv) == 0
    report = json.loads(path.read_text())
    assert report["native_bf16"] is False and report["machine"]["native_bf16"] is False
    assert set(report["gemm_peak_gflops"]) == {"fp32"}
    assert not any(key.startswith("bf16_") and key != "bf16_not_measured" for key in report)
    assert "bf16" not in report and all("bf16_seconds" not in c for c in report["components"].values())
    lines = [line for line in capsys.readouterr().out.splitlines() if "bf16" in line]
    cpu = report["machine"]["cpu"]
    assert lines == [f"machine: {cpu}, {report['machine']['threads']} threads, torch {torch.__version__}, device cpu "
                     "(bf16 emulated)", report["bf16_not_measured"]]  # fmt: skip
    assert report["bf16_not_measured"].startswith(f"bf16: not measured: {cpu} has no native bf16")


def test_table_names_the_machine_and_components(report):
    table = bench.format_report(report)
    assert report["machine"]["cpu"] in table and "matmul peak" in table
    for name in (
        "clip ×4",
        "guidance",
        "refinement",
        "decoder",
        "total",
        "argmax agreement",
        "MP/s",
        "% bf16",
    ):
        assert name in table
    assert "of the bf16 peak" in table


@pytest.mark.parametrize(
    "argv", [["--classes", "0"], ["--skip", "predict,nothing"], ["--repeats", "0"], ["--device", "nodevice"]]
)
def test_bad_arguments_are_one_line_errors(argv, capsys):
    assert main(["bench", "--short", "--quiet", *argv]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_counted_flops_of_the_correlation_are_exact():
    """Eq. 3 (einsum) and Eq. 4 (7×7 convolution per class) have a closed-form cost."""
    model = build_tiny().eval()
    c = model.config
    images = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    result, _ = measure.count_forward(model, images, measure.class_names(10))
    R, P, C, hw, T, d = len(c.rotations), len(c.prompt_templates), 16, 8 * 8, 10, c.hidden_dim
    expected = 2 * R * P * C * hw * T + 2 * T * hw * d * R * P * c.correlation_kernel**2
    assert result["components"]["correlation"]["gflop"] * 1e9 == pytest.approx(expected)


def test_cpu_attention_flops_are_counted():
    q = k = v = torch.rand(2, 3, 16, 8)
    with FlopCounterMode(display=False, custom_mapping=measure.FLOP_MAPPING) as flops:
        F.scaled_dot_product_attention(q, k, v)
    assert flops.get_total_flops() == 2 * (2 * 2 * 3 * 16 * 16 * 8)  # Q·Kᵀ and P·V


def test_memory_tracker_peak():
    with measure.MemoryTracker() as memory:
        a = torch.ones(1000, 1000)  # 4 MB
        b = a + 1
        del a, b
        c = torch.ones(2000, 1000)  # 8 MB
    assert memory.peak == 8_000_000 and memory.current == c.numel() * 4


def test_probe_leaves_the_model_as_it_was():
    model = build_tiny().eval()
    images, classes = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE), ["ship", "road", "tree"]
    with torch.inference_mode():
        plain = model(images, classes)
        with measure.probe(model, images.device, counting=False) as p:
            timed = model(images, classes)
        with measure.probe(model, images.device, counting=True):
            counted = model(images, classes)
    assert torch.equal(plain, timed)  # timing changes nothing
    torch.testing.assert_close(counted, plain, rtol=1e-5, atol=1e-5)  # FLOP counting may decompose fused ops
    assert p["components"]["text"].calls == 0  # the class list was cached by the first call
    assert "forward" not in vars(model.decoder) and "encode" not in vars(model.backbone)


def test_class_count_has_no_cap_and_cost_is_linear():
    model = build_tiny().eval()
    with torch.inference_mode():
        feats = model.encode(torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    flops = {}
    for T in (10, 150, 300):
        classes = measure.class_names(T)
        with torch.inference_mode():
            model.encode_text(classes)  # cached: the count below is the per-class segmentation alone
            with FlopCounterMode(display=False, custom_mapping=measure.FLOP_MAPPING) as counter:
                logits = model.segment(feats, classes)
        assert logits.shape == (1, T, IMAGE_SIZE, IMAGE_SIZE)
        flops[T] = counter.get_total_flops()
    assert (flops[300] - flops[150]) * 140 == (flops[150] - flops[10]) * 150  # flops = a + b·T


def test_compare_logits():
    a = torch.tensor([2.0, 1.0, 0.0]).view(1, 3, 1, 1)  # three classes at one pixel, margin 1
    assert measure.compare_logits(a, a) == {
        "argmax_agreement": 1.0,
        "median_logit_error": 0.0,
        "max_relative_error": 0.0,
        "median_margin": 1.0,
    }
    b = a.clone()
    b[0, 1] = 3.0  # class 1 overtakes class 0
    assert measure.compare_logits(a, b)["argmax_agreement"] == 0.0


def test_class_names():
    names = measure.class_names(500)
    assert len(set(names)) == 500 and names[0] == "ship" and names[-1] == "object 499"


@pytest.mark.parametrize("preset", ["baseline", "aeroseg-sam2-hiera-b+"])
def test_tiny_presets_run(preset):
    model = build_tiny(preset).eval()
    with torch.inference_mode():
        assert model(torch.rand(1, 3, 40, 56), ["a", "b"]).shape == (1, 2, 40, 56)


def test_autocast_helper():
    layer = torch.nn.Linear(4, 4)
    with autocast("cpu", "bf16"):
        assert layer(torch.rand(2, 4)).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert layer(torch.rand(2, 4)).dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        autocast("cpu", "int8")


def test_text_cache_follows_the_precision():
    model = build_tiny().eval()
    images, classes = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE), ["ship", "road"]
    with torch.inference_mode():
        with autocast("cpu", "bf16"):
            model(images, classes)
        assert model(images, classes).dtype == torch.float32  # not the bf16 text of the first call


TRAINING_FREE = {
    "training-free": {"clip", "text", "sam", "regions", "upsampling"},
    "segearth-ov": {"clip", "text", "simfeatup"},
    "segearth-ov3": {"sam3 encoder", "text", "detector", "fusion"},
}

ENCODERS = {
    "training-free": ("clip", "text"),
    "segearth-ov": ("clip", "text"),
    "segearth-ov3": ("sam3 encoder",),
}


@pytest.mark.parametrize("preset", sorted(TRAINING_FREE))
def test_training_free_presets_per_component(preset, tmp_path):
    path = tmp_path / "bench.json"
    argv = ["bench", "--short", "--quiet", "--preset", preset, "--repeats", "1", "--classes", "3"]
    assert main([*argv, "--skip", "bf16,train", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    components = report["components"]
    assert set(components) == {*TRAINING_FREE[preset], "other"}
    assert all(c["calls"] >= 1 and c["seconds"] > 0 for n, c in components.items() if n != "other")
    assert all(components[n]["gflop"] > 0 for n in ENCODERS[preset])  # resizes and softmaxes count no FLOPs
    assert sum(c["gflop"] for c in components.values()) == pytest.approx(report["gflop"])
    rate = report["gflop"] / report["seconds"]
    assert report["fraction_of_peak"] == pytest.approx(rate / report["gemm_peak_gflops"]["fp32"])
    # every encoder and SAM 3's detector (all prompts in one batched pass) run once; SimFeatUp once per crop
    assert report["checks"] == {"components_called_once": True}
    if preset == "segearth-ov":
        assert components["simfeatup"]["calls"] == 2 * 4  # per crop: its kernels, its unit grids upsampled
    if preset == "segearth-ov3":
        detector = components["detector"]
        assert detector["calls"] == 1 and detector["seconds_per_prompt"] == pytest.approx(
            detector["seconds"] / 3
        )
    assert report["predict"]["windows"] == 4 and report["predict"]["megapixels_per_second"] > 0
    assert "train_step" not in report
    table = bench.format_report(report)
    assert all(name in table for name in TRAINING_FREE[preset])
