"""AdamW parameter groups and the learning-rate schedule as CAT-Seg's ``train_net.py`` builds them.

``Trainer.build_optimizer`` of KU-CVLAB/CAT-Seg (and caoql98/OVRS, unchanged) gives every trainable parameter
the base weight decay except: parameters of normalisation modules (``SOLVER.WEIGHT_DECAY_NORM``, 0.0 in
detectron2's defaults), of ``nn.Embedding`` (``SOLVER.WEIGHT_DECAY_EMBED``, 0.0 in ``cat_seg/config.py``) and
parameters named ``relative_position_bias_table`` or ``absolute_pos_embed``; biases keep the decay. The schedule
is detectron2's ``WarmupCosineLR`` with ``WARMUP_ITERS: 0`` and ``BASE_LR_END`` 0 (``configs/config.yaml``):
a cosine from 1 to 0 over the run.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
"""Module types whose parameters get no weight decay (the list of CAT-Seg's ``train_net.py``)."""

NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")
"""Parameter names that get no weight decay (CAT-Seg's ``train_net.py``)."""


def no_decay_parameters(model: nn.Module) -> set[int]:
    """``id`` of every parameter of a normalisation or embedding module, or with a no-decay name."""
    ids = set()
    for module in model.modules():
        no_module_decay = isinstance(module, (*NORM_TYPES, nn.Embedding))
        for name, param in module.named_parameters(recurse=False):
            if no_module_decay or name in NO_DECAY_NAMES:
                ids.add(id(param))
    return ids


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: each of ``model.param_groups()`` (name, params, lr) split into a part with
    ``weight_decay`` and a part without (see the module docstring). Both parts keep the group's name."""
    skip = no_decay_parameters(model)
    groups = []
    for group in model.param_groups():
        decay = [p for p in group["params"] if id(p) not in skip]
        no_decay = [p for p in group["params"] if id(p) in skip]
        for params, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if params:
                groups.append({**group, "params": params, "weight_decay": wd})
    return groups


def cosine_factor(step: int, *, steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """lr multiplier at ``step`` (0-based): linear warm-up, then cosine from 1 to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
