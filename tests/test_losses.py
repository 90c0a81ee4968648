"""The BCE of Eq. 12 against a hand computation, with ignore pixels as negatives (reference) or excluded."""

from __future__ import annotations

import math

import pytest
import torch

from aeroseg.config import AerOSegConfig
from aeroseg.losses import AerOSegLoss
from aeroseg.modeling.aeroseg import AerOSegOutput


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


# one image, 2 classes, 1×3 pixels: class 0, class 1, ignore
LOGITS = [[[[2.0, -1.0, 0.5]], [[-3.0, 1.5, -0.25]]]]  # B×T×H×W = 1×2×1×3
MASK = [[[0, 1, 255]]]


def test_default_counts_ignore_pixels_as_negatives_for_every_class():
    config = AerOSegConfig(back_projection=False)
    assert config.ignore_as_negative  # the reference (CAT-Seg cat_seg_model.py) is the default
    loss = AerOSegLoss(config)(AerOSegOutput(torch.tensor(LOGITS)), torch.tensor(MASK))
    terms = [
        _bce(2.0, 1), _bce(-1.0, 0), _bce(0.5, 0),  # class 0: positive, negative, ignore -> negative
        _bce(-3.0, 0), _bce(1.5, 1), _bce(-0.25, 0),  # class 1
    ]  # fmt: skip
    assert loss["bce"].item() == pytest.approx(sum(terms) / 6, rel=1e-6)
    assert loss["loss"].item() == pytest.approx(sum(terms) / 6, rel=1e-6)


def test_excluded_ignore_pixels_leave_the_mean():
    config = AerOSegConfig(back_projection=False, ignore_as_negative=False)
    loss = AerOSegLoss(config)(AerOSegOutput(torch.tensor(LOGITS)), torch.tensor(MASK))
    terms = [_bce(2.0, 1), _bce(-1.0, 0), _bce(-3.0, 0), _bce(1.5, 1)]
    assert loss["bce"].item() == pytest.approx(sum(terms) / 4, rel=1e-6)


def test_logits_are_resized_to_the_mask_and_back_projection_is_added():
    config = AerOSegConfig(back_projection_weight=0.5)
    logits = torch.zeros(1, 2, 2, 2)  # upsampled bilinearly to 4×4: still all zero
    rec, target = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    loss = AerOSegLoss(config)(AerOSegOutput(logits, rec, target), torch.zeros(1, 4, 4, dtype=torch.long))
    assert loss["bce"].item() == pytest.approx(math.log(2))
    assert loss["back_projection"].item() == pytest.approx(1.0)  # L1
    assert loss["loss"].item() == pytest.approx(math.log(2) + 0.5)
