"""AdamW parameter groups and the learning-rate schedule as CAT-Seg's ``train_net.py`` builds them.

``Trainer.build_optimizer`` of KU-CVLAB/CAT-Seg (and caoql98/OVRS, unchanged) gives every trainable parameter
the base weight decay except: parameters of normalisation modules (``SOLVER.WEIGHT_DECAY_NORM``, 0.0 in
detectron2's defaults), of ``nn.Embedding`` (``SOLVER.WEIGHT_DECAY_EMBED``, 0.0 in ``cat_seg/config.py``) and
parameters named ``relative_position_bias_table`` or ``absolute_pos_embed``; biases keep the decay. The schedule
is detectron2's ``WarmupCosineLR`` with ``WARMUP_ITERS: 0`` and ``BASE_LR_END`` 0 (``configs/config.yaml``):
a cosine from 1 to 0 over the run. SAN and SCAN train with DeepLab's ``WarmupPolyLR`` (detectron2
``projects/DeepLab/deeplab/lr_scheduler.py``), SCAN after a linear warm-up from ``WARMUP_FACTOR`` 1e-6
(``detectron2/solver/lr_scheduler.py`` ``_get_warmup_factor_at_iter``): :func:`lr_factor`.

A model's group may carry its own ``weight_decay`` (SAN: 0 on the side adapter's position and query
embeddings, ``WEIGHT_DECAY_EMBED_GROUP``); the other groups get the run's.
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
    """AdamW groups: each of ``model.param_groups()`` (name, params, lr) split into a part with the group's own
    ``weight_decay`` (else ``weight_decay``) and a part without (see the module docstring). Both parts keep
    the group's name."""
    skip = no_decay_parameters(model)
    groups = []
    for group in model.param_groups():
        decay = [p for p in group["params"] if id(p) not in skip]
        no_decay = [p for p in group["params"] if id(p) in skip]
        for params, wd in ((decay, group.get("weight_decay", weight_decay)), (no_decay, 0.0)):
            if params:
                groups.append({**group, "params": params, "weight_decay": wd})
    return groups


def cosine_factor(step: int, *, steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """lr multiplier at ``step`` (0-based): linear warm-up, then cosine from 1 to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULES = ("cosine", "poly")


def lr_factor(
    step: int,
    *,
    schedule: str,
    steps: int,
    warmup_steps: int,
    warmup_factor: float | None,
    min_lr_ratio: float,
    power: float,
) -> float:
    """lr multiplier at ``step`` (0-based) of a ``schedule`` ("cosine" or "poly" with ``power``) that ends at
    ``min_lr_ratio``.

    ``warmup_factor`` None: :func:`cosine_factor`'s linear warm-up from 1 / ``warmup_steps``, after which the
    decay runs over the remaining steps (the cosine is that function). A number: detectron2's linear warm-up
    from that factor, multiplying a decay over the whole run (``WarmupPolyLR``, whose ``constant_ending`` is
    ``min_lr_ratio``: the decay does not fall below it once warmed up; ``WarmupCosineLR`` with
    ``BASE_LR_END``).
    """
    if warmup_factor is None:
        if schedule == "cosine" or step < warmup_steps:
            return cosine_factor(step, steps=steps, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio)
        progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
        return max(min_lr_ratio, (1 - progress) ** power)
    warm = 1.0
    if step < warmup_steps:
        alpha = step / warmup_steps
        warm = warmup_factor * (1 - alpha) + alpha
    progress = min(1.0, step / steps)
    if schedule == "cosine":
        return warm * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    decay = (1 - progress) ** power
    return warm * (max(decay, min_lr_ratio) if warm == 1.0 else decay)
