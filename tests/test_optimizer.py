"""Optimizer as CAT-Seg's train_net.py builds it: no weight decay on norm layers, full-model gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from aeroseg.training.distributed import Distributed
from aeroseg.training.optimizer import NORM_TYPES, optimizer_groups
from aeroseg.training.train_config import TrainConfig, load_yaml, merge
from aeroseg.training.trainer import Trainer
from tests.helpers.tiny import build_tiny_model
from tests.test_train import write_dataset, write_tiny_config


def test_norm_layers_carry_no_weight_decay_and_every_trainable_parameter_is_in_one_group():
    model = build_tiny_model(preset="aeroseg")
    groups = optimizer_groups(model, weight_decay=1e-4)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(decay_of) == len(trainable) == sum(len(g["params"]) for g in groups)
    norms = convs = 0
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(module, NORM_TYPES):
                assert decay_of[id(p)] == 0.0, module
                norms += 1
            elif isinstance(module, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
                assert decay_of[id(p)] == 1e-4, module  # weights and biases keep the decay (reference)
                convs += 1
    assert norms > 10 and convs > 10  # LayerNorms of the refinement, GroupNorms of the decoder
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {g["name"]: g["lr"] for g in model.param_groups()}  # the split keeps each group's lr


def test_gradients_are_clipped_to_the_configured_norm_of_the_whole_model(tmp_path, tiny_backbones):
    data = write_dataset(tmp_path / "data", n=2)
    config = write_tiny_config(tmp_path / "tiny.yaml", tiny_backbones)
    cfg = merge(TrainConfig(), load_yaml(config), "test")
    assert TrainConfig().grad_clip == 0.01  # CAT-Seg configs/config.yaml CLIP_GRADIENTS.CLIP_VALUE
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = torch.randint(0, 3, (2, 32, 32), generator=torch.Generator().manual_seed(1))
    for clip in (0.01, 0.0):
        cfg = merge(cfg, {"data": str(data), "out": str(tmp_path / f"run{clip}"), "grad_clip": clip}, "test")
        trainer = Trainer(cfg, Distributed(0, 1, torch.device("cpu")))
        before = trainer.train_step(images, masks)["grad_norm"].item()
        after = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in trainer.params if p.grad is not None))
        assert before > 0.02  # so that clipping at 0.01 acts
        assert after == pytest.approx(0.01 if clip else before, rel=1e-4)
