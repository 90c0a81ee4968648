"""``aeroseg train --preset sed|san|scan`` in our trainer, as the official code trains (its criterion from the
registry, its parameter groups, the poly schedule, multi-scale resize and padding of its config), on tiny models
and the tiny fake dataset: steps with falling loss, an exact resume of a killed run, and ``evaluate`` of the
result."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from aeroseg.cli import main
from aeroseg.training.optimizer import lr_factor
from aeroseg.training.train_config import dump_yaml
from aeroseg.training.trainer import Trainer
from tests.helpers import tiny_families
from tests.test_train import one_thread, read_metrics, write_dataset  # noqa: F401 (one_thread: autouse fixture)

# the official settings at tiny sizes: 48-px crops from images resized to a shorter side of 32 or 64 (the
# smaller ones padded), every crop padded to 64 at the end; lr raised for a visible change in a few steps
SCHEDULES = {
    "sed": dict(lr_schedule="cosine", max_size_train=128, size_divisibility=64),
    "san": dict(lr_schedule="poly", warmup_factor=1.0, precision="fp32", size_divisibility=64),
    "scan": dict(
        lr_schedule="poly", warmup_steps=2, warmup_factor=1e-6, weight_decay=0.01, size_divisibility=64
    ),
}
MODEL = {  # the tiny models' test sides, so that evaluate's reference protocol stays small
    "sed": dict(test_min_size=64, clip_image_size=128, lr=1e-3),
    "san": dict(test_size=64, lr=1e-3),
    "scan": dict(test_size=64, lr=1e-3),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), size=64)


def family_config(tmp_path, family):
    settings = dict(
        crop_size=48, min_size_train=[32, 64], rot90=False, device="cpu", num_workers=0, quiet=True
    )
    settings |= SCHEDULES[family]
    path = tmp_path / f"{family}.yaml"
    path.write_text(
        dump_yaml({"preset": family, **settings, "model": tiny_families.overrides(family) | MODEL[family]})
    )
    return path


@pytest.mark.parametrize("family", tiny_families.FAMILIES)
def test_a_family_trains_resumes_exactly_and_evaluates(family, tmp_path, dataset, monkeypatch, capsys):
    common = ["--data", str(dataset), "--config", str(family_config(tmp_path, family)), "--steps", "4"]
    common += ["--batch-size", "2", "--save-every", "2"]
    assert main(["train", *common, "--out", str(tmp_path / "full")]) == 0
    rows = read_metrics(tmp_path / "full")
    loss = [float(r["loss"]) for r in rows]
    assert len(loss) == 4 and all(math.isfinite(v) for v in loss)
    if family == "sed":  # a deterministic loss (no point sampling): it falls on these separable colours
        assert loss[-1] < loss[0], loss
    schedule = SCHEDULES[family]
    groups = [k for k in rows[0] if k.startswith("lr_")]
    factor = lr_factor(
        1, schedule=schedule["lr_schedule"], steps=4, warmup_steps=schedule.get("warmup_steps", 0),
        warmup_factor=schedule.get("warmup_factor"), min_lr_ratio=0.0, power=0.9,
    )  # fmt: skip
    assert float(rows[0][f"lr_{family}"]) == pytest.approx(1e-3 * factor)  # the lr after step 1
    assert len(groups) >= 2  # the model's own groups (multipliers, weight decay) reach the optimizer

    run = tmp_path / "killed"
    step = Trainer.train_step

    def dies_in_step_3(self, images, masks):
        if self.step == 2:
            raise KeyboardInterrupt
        return step(self, images, masks)

    monkeypatch.setattr(Trainer, "train_step", dies_in_step_3)
    assert main(["train", *common, "--out", str(run)]) == 130
    monkeypatch.undo()
    assert main(["train", "--resume", "--out", str(run)]) == 0
    full, resumed = (
        load_file(tmp_path / "full/final/model.safetensors"),
        load_file(run / "final/model.safetensors"),
    )
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert drop_time(read_metrics(run)) == drop_time(rows)

    out = tmp_path / "eval.json"
    assert (
        main(["evaluate", "--data", str(dataset), "--checkpoint", str(run), "--json", str(out), "--quiet"])
        == 0
    )
    scores = json.loads(out.read_text())
    assert scores["preset"] == family and 0 <= scores["s_miou"] <= 100
    assert len(scores["per_class_iou"]) == 4
    capsys.readouterr()


def test_the_poly_schedule_is_detectron2s_warmup_poly_lr():
    """DeepLab's WarmupPolyLR: factor = warm-up(step) · (1 - step / steps)^0.9, the warm-up linear from
    WARMUP_FACTOR to 1 over WARMUP_ITERS (``_get_warmup_factor_at_iter``); SCAN's 1e-6 over 1,500 steps."""
    scan = dict(
        schedule="poly", steps=120_000, warmup_steps=1500, warmup_factor=1e-6, min_lr_ratio=0.0, power=0.9
    )
    assert lr_factor(0, **scan) == pytest.approx(1e-6)
    alpha = 750 / 1500
    assert lr_factor(750, **scan) == pytest.approx((1e-6 * (1 - alpha) + alpha) * (1 - 750 / 120_000) ** 0.9)
    assert lr_factor(60_000, **scan) == pytest.approx(0.5**0.9)
    assert lr_factor(120_000, **scan) == 0.0
    san = dict(scan, steps=60_000, warmup_steps=0, warmup_factor=1.0)
    assert lr_factor(0, **san) == 1.0 and lr_factor(30_000, **san) == pytest.approx(0.5**0.9)
    ending = dict(san, min_lr_ratio=0.2)  # POLY_LR_CONSTANT_ENDING
    assert lr_factor(59_000, **ending) == 0.2
    # the AerOSeg default is the cosine from 1 to 0 it always was
    cosine = dict(
        schedule="cosine", steps=10, warmup_steps=0, warmup_factor=None, min_lr_ratio=0.0, power=0.9
    )
    assert [lr_factor(s, **cosine) for s in range(11)] == [
        0.5 * (1 + math.cos(math.pi * s / 10)) for s in range(11)
    ]


def test_a_groups_own_weight_decay_is_kept():
    """SAN's side adapter embeddings train without weight decay (WEIGHT_DECAY_EMBED_GROUP), whatever the run's."""
    from aeroseg.training.optimizer import optimizer_groups
    from tests.helpers.tiny_san import tiny_san

    model = tiny_san()
    groups = optimizer_groups(model, weight_decay=0.05)
    embeddings = {id(model.side_adapter.pos_embed), id(model.side_adapter.query_embed)}
    for group in groups:
        ids = {id(p) for p in group["params"]}
        if ids & embeddings:
            assert group["weight_decay"] == 0.0 and group["name"] == "side_adapter_embeddings"
    assert {g["weight_decay"] for g in groups if g["name"] == "side_adapter"} == {0.05}


def test_multi_scale_resize_then_padding_after_the_flip():
    from aeroseg.data.transforms import PadToMultiple, ResizeShortestEdge, training_transforms

    torch.manual_seed(0)
    sample = {"image": torch.rand(3, 40, 60), "mask": torch.zeros(40, 60, dtype=torch.long)}
    sides = {min(ResizeShortestEdge([20, 30], max_size=100)(sample)["mask"].shape) for _ in range(20)}
    assert sides == {20, 30}
    assert ResizeShortestEdge([40], max_size=50)(sample)["mask"].shape == (33, 50)  # longer side at most 50
    padded = PadToMultiple(32)(sample)
    assert padded["mask"].shape == (64, 64) and (padded["mask"][40:] == 255).all()
    assert torch.equal(padded["image"][:, 40:], torch.full((3, 24, 64), 128 / 255))
    transform = training_transforms(
        48, [], min_sizes=[24], max_size=100, size_divisibility=64, color_jitter=True
    )
    for seed in range(4):  # flipped or not, the padding stays at the bottom and right (after the flip)
        torch.manual_seed(seed)
        out = transform({"image": torch.rand(3, 40, 40), "mask": torch.ones(40, 40, dtype=torch.long)})
        assert out["mask"].shape == (64, 64)
        assert (
            (out["mask"][:24, :24] == 1).all()
            and (out["mask"][24:] == 255).all()
            and (out["mask"][:, 24:] == 255).all()
        )
        assert (out["image"][:, 24:] == 128 / 255).all()  # the colour jitter ran before the padding


def test_model_settings_are_checked_against_the_presets_own_config(tmp_path, dataset, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("preset: sed\nmodel:\n  back_projection_weight: 1.0\n")  # an AerOSegConfig field
    assert (
        main(["train", "--data", str(dataset), "--out", str(tmp_path / "run"), "--config", str(config)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "unknown model setting(s) back_projection_weight of preset sed" in err and "SEDConfig" in err
    config.write_text("preset: sed\nmodel:\n  early_rejection_topk: 8\nmin_size_train: [32, 4]\n")
    assert (
        main(["train", "--data", str(dataset), "--out", str(tmp_path / "run"), "--config", str(config)]) == 2
    )
    assert "min_size_train must be a list of whole numbers >= 8" in capsys.readouterr().err
