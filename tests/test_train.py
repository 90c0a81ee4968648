"""``aeroseg train`` end to end on a tiny model and a tiny canonical dataset: learning, exact resume, configs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import aeroseg
import aeroseg.progress
from aeroseg.cli import build_parser, main
from aeroseg.cli.train import resolve_config
from aeroseg.registry import preset_config
from aeroseg.training.checkpointing import STATE_FILE, find_checkpoint, list_checkpoints
from aeroseg.training.optimizer import cosine_factor
from aeroseg.training.train_config import TrainConfig, dump_yaml, load_yaml, merge
from aeroseg.training.trainer import Trainer
from tests.helpers.tiny import tiny_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CLASSES = ["roof", "grass", "water", "sand"]  # "sand" is unseen: its pixels are ignored in training
COLORS = np.array([(230, 40, 40), (40, 200, 60), (50, 60, 220), (220, 220, 40)], dtype=np.float32)


def write_dataset(root: Path, *, n: int = 4, size: int = 32, unseen: bool = True, seed: int = 0) -> Path:
    """A canonical dataset (dataset.yaml, {train,val}/{images,masks}) of ``n`` (val: 2) four-quadrant images whose
    colours follow their classes; ``unseen=False`` leaves out unseen and ignore pixels (equal valid pixels)."""
    rng = np.random.default_rng(seed)
    info = dict(name="fake", classes=CLASSES, unseen=["sand"], ignore_index=255)
    (root / "train").mkdir(parents=True)
    (root / "dataset.yaml").write_text(yaml.safe_dump(info))
    half = size // 2
    for split, count in (("train", n), ("val", 2)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(count):
            ids = rng.integers(0, len(CLASSES) if unseen else len(CLASSES) - 1, 4)
            mask = np.kron(ids.reshape(2, 2), np.ones((half, half), dtype=np.int64)).astype(np.uint8)
            image = COLORS[mask] + rng.normal(0, 20, (size, size, 3))
            if unseen:
                mask[:2] = 255
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
                root / split / "images" / f"{i:03d}.png"
            )
            Image.fromarray(mask).save(root / split / "masks" / f"{i:03d}.png")
    return root


def write_tiny_config(path: Path, backbones: dict[str, Path], **settings) -> Path:
    """A --config file that puts the aeroseg preset on the tiny backbones (32-pixel crops, CPU, no workers)."""
    config = {**dict(crop_size=32, rot90=False, device="cpu", num_workers=0, quiet=True), **settings}
    path.write_text(dump_yaml({**config, "model": tiny_overrides("aeroseg", backbones)}))
    return path


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(autouse=True)
def one_thread():
    """Two cores shared by several test processes: more threads only wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def tiny_config(tmp_path, tiny_backbones):
    return write_tiny_config(tmp_path / "tiny.yaml", tiny_backbones)


def test_loss_goes_down_and_run_is_complete(tmp_path, dataset, tiny_config):
    run = tmp_path / "run"
    argv = ["train", "--data", str(dataset), "--out", str(run), "--config", str(tiny_config)]
    assert (
        main(
            [
                *argv,
                "--steps",
                "20",
                "--batch-size",
                "2",
                "--lr",
                "2e-3",
                "--save-every",
                "0",
                "--eval-every",
                "10",
            ]
        )
        == 0
    )

    rows = read_metrics(run)
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    columns = ["step", "loss", "bce", "back_projection", "grad_norm", "lr_aeroseg", "lr_clip", "time"]
    assert list(rows[0]) == columns
    loss = [float(r["loss"]) for r in rows]
    assert np.mean(loss[-5:]) < 0.97 * np.mean(loss[:5]), loss
    first_lr = 2e-3 * cosine_factor(1, steps=20, warmup_steps=0, min_lr_ratio=0)  # lr after step 1
    assert float(rows[0]["lr_aeroseg"]) == pytest.approx(first_lr)
    assert float(rows[-1]["lr_aeroseg"]) == 0.0  # cosine to zero
    assert float(rows[0]["lr_clip"]) / float(rows[0]["lr_aeroseg"]) == pytest.approx(2e-6 / 2e-3)

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["steps"] == 20 and resolved["batch_size"] == 2
    assert resolved["model"]["lr"] == 2e-3
    assert resolved["model"]["back_projection_classes"] == 3  # the seen classes
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert not list_checkpoints(run)  # --save-every 0
    with open(run / "eval.csv", newline="") as handle:
        evals = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in evals] == [10, 20]
    assert all(0 <= float(r["h_miou"]) <= 100 and float(r["s_miou"]) >= 0 for r in evals)

    model = aeroseg.AerOSeg.from_pretrained(run / "final")
    assert model.config.back_projection_classes == 3
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32), CLASSES).shape == (1, 4, 32, 32)


def test_killed_run_resumes_bit_identical(tmp_path, dataset, tiny_config, monkeypatch):
    common = ["--data", str(dataset), "--config", str(tiny_config), "--steps", "6", "--batch-size", "2"]
    common += ["--save-every", "3", "--lr", "1e-3"]
    assert main(["train", *common, "--out", str(tmp_path / "full")]) == 0
    rng_full = torch.get_rng_state()

    run = tmp_path / "killed"
    step = Trainer.train_step

    def dies_in_step_5(self, images, masks):
        if self.step == 4:  # checkpoint at 3, step 4 logged: the process dies in the middle of step 5
            raise KeyboardInterrupt
        return step(self, images, masks)

    monkeypatch.setattr(Trainer, "train_step", dies_in_step_5)
    assert main(["train", *common, "--out", str(run)]) == 130
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(run)] == ["step_000003"]
    assert [int(r["step"]) for r in read_metrics(run)] == [1, 2, 3, 4]
    state = torch.load(run / "checkpoints" / "step_000003" / STATE_FILE, weights_only=True)
    assert (state["step"], state["position"]) == (3, 6)
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(state)

    checkpoint = find_checkpoint(run, "latest")
    assert checkpoint == run / "checkpoints" / "step_000003"
    # RUN is the checkpoint's grandparent; everything else comes from RUN/config.yaml
    assert main(["train", "--resume", str(checkpoint)]) == 0
    assert torch.equal(torch.get_rng_state(), rng_full)

    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    resumed = load_file(run / "final" / "model.safetensors")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)  # bit-identical
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert drop_time(read_metrics(run)) == drop_time(read_metrics(tmp_path / "full"))
    assert [p.name for p in list_checkpoints(run)] == ["step_000003", "step_000006"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision(tmp_path, dataset, tiny_config, precision):
    run = tmp_path / "run"
    argv = ["--data", str(dataset), "--config", str(tiny_config), "--out", str(run), "--precision", precision]
    assert main(["train", *argv, "--steps", "2", "--batch-size", "2", "--save-every", "2"]) == 0
    assert all(np.isfinite(float(r["loss"])) for r in read_metrics(run))
    state = torch.load(run / "checkpoints" / "step_000002" / STATE_FILE, weights_only=True)
    assert ("scale" in state["scaler"]) == (precision == "fp16")  # fp16 trains with a GradScaler


def test_config_file_then_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("steps: 7\nbatch_size: 2\nseed: 3\nmodel: {lr: 1.0e-3, reconstruction_target: rgb}\n")
    argv = ["train", "--data", "d", "--out", "o", "--config", str(config), "--steps", "3", "--lr", "5e-4"]
    cfg = resolve_config(build_parser().parse_args(argv))
    assert (cfg.steps, cfg.batch_size, cfg.seed, cfg.weight_decay) == (3, 2, 3, 1e-4)
    assert cfg.model == {"lr": 5e-4, "reconstruction_target": "rgb"}
    cfg = resolve_config(build_parser().parse_args(["train", "--data", "d", "--out", "o", "--clip", "c.pt"]))
    assert cfg.model == {"clip": "c.pt"} and cfg.steps == 10_000 and cfg.batch_size == 4


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        ("typo", ["--config", "{tmp}/bad.yaml"], "unknown training setting(s) stpes"),
        ("model", ["--config", "{tmp}/bad.yaml"], "unknown model setting(s) hiden_dim"),
        (None, ["--resume"], "nothing to resume"),
        (None, ["--steps", "0"], "steps must be >= 1"),
        ("type", ["--config", "{tmp}/bad.yaml"], "setting batch_size must be int, got 'four'"),
        ("run", [], "holds a previous run"),
        (None, ["--preset", "nope"], "unknown preset 'nope'"),
    ],
)
def test_bad_input_is_one_line(tmp_path, dataset, capsys, setup, argv, message):
    if setup == "typo":
        (tmp_path / "bad.yaml").write_text("stpes: 3\n")
    elif setup == "type":
        (tmp_path / "bad.yaml").write_text("batch_size: four\n")
    elif setup == "model":
        (tmp_path / "bad.yaml").write_text("model:\n  hiden_dim: 3\n")
    elif setup == "run":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "config.yaml").write_text("steps: 1\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["train", "--data", str(dataset), "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_default_yaml_is_the_dataclass():
    assert load_yaml(CONFIGS / "default.yaml") == TrainConfig().to_dict()


# each baseline's own default schedule (the paper ran them "with their default configurations"): steps, global
# batch, crop, lr schedule, warm-up (steps, factor), shorter training sides, longest side, padding, precision
OFFICIAL_SCHEDULES = {
    "cat-seg": (80_000, 4, 384, "cosine", 0, None, None, 1333, 0, "fp32"),  # CAT-Seg configs/vitb_384.yaml
    "ovrs": (80_000, 4, 384, "cosine", 0, None, None, 1333, 0, "fp32"),  # OVRS runs CAT-Seg's
    "sed": (80_000, 4, 768, "cosine", 0, None, None, 2666, 768, "fp32"),  # SED configs/convnextB_768.yaml
    "san": (60_000, 32, 640, "poly", 0, 1.0, list(range(320, 961, 64)), 2560, 640, "fp16"),  # SAN Base-coco
    "scan": (120_000, 32, 640, "poly", 1500, 1e-6, list(range(320, 1281, 64)), 2560, 640, "fp32"),  # vitB
}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_experiment_configs_resolve(path):
    cfg = merge(TrainConfig(), load_yaml(path), str(path))
    merge(cfg, {"data": "d", "out": "o"}, "test").validate()  # schedule and model: settings
    assert cfg.preset in aeroseg.presets()
    model = preset_config(cfg.preset, **cfg.model)
    stem = path.stem
    schedule = (
        cfg.steps,
        cfg.batch_size,
        cfg.crop_size,
        cfg.lr_schedule,
        cfg.warmup_steps,
        cfg.warmup_factor,
    )
    schedule += (cfg.min_size_train, cfg.max_size_train, cfg.size_divisibility, cfg.precision)
    if stem in OFFICIAL_SCHEDULES:
        assert stem == cfg.preset and schedule == OFFICIAL_SCHEDULES[stem]
        assert cfg.weight_decay == (0.01 if stem == "scan" else 1e-4)
        return
    steps = {"isaid": 10_000, "dlrsd": 5_000, "openearthmap": 15_000}[
        path.parent.name
    ]  # the paper's, Sec. 4.2
    assert schedule[:2] == (steps, 4) and schedule[3:] == ("cosine", 0, None, None, 1333, 0, "fp32")
    assert stem.startswith(cfg.preset) or stem.startswith("aeroseg")
    assert model.guidance_trainable == (stem == "aeroseg-guidance-finetuned")
    target = {"aeroseg-target-rgb": "rgb", "aeroseg-target-clip": "clip"}.get(stem, "sam")
    assert model.reconstruction_target == target


def test_help_shows_the_defaults_and_errors_name_o_output(tmp_path, dataset, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # help lines joined
    model = preset_config("aeroseg")
    assert f"--steps N optimizer steps (default {TrainConfig().steps};" in text
    assert f"(default: the preset's; aeroseg: {model.clip})" in text
    assert f"(default: the preset's; aeroseg: {model.guidance})" in text
    assert main(["train", "--data", str(dataset)]) == 2
    assert capsys.readouterr().err.strip().endswith("no run directory: pass -o/--output RUN")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("steps: 1\n")
    assert main(["train", "--data", str(dataset), "-o", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().endswith("or another -o/--output")


def test_a_log_gets_each_progress_line_once_named_train(
    tmp_path, dataset, tiny_backbones, capsys, monkeypatch
):
    monkeypatch.setattr(aeroseg.progress, "LOG_INTERVAL", 0.0)  # a line at every step
    config = write_tiny_config(tmp_path / "tiny.yaml", tiny_backbones, quiet=False)
    argv = ["train", "--data", str(dataset), "-o", str(tmp_path / "run"), "--config", str(config)]
    assert main([*argv, "--steps", "3", "--batch-size", "2", "--save-every", "0"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "steps (" in line]  # stderr: not a tty
    assert [line.split(",")[0] for line in lines] == [
        f"train: {n}/3 steps ({p}%)" for n, p in ((1, 33), (2, 67), (3, 100))
    ]
