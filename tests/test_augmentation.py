"""Training augmentation against the steps of CAT-Seg's ``MaskFormerSemanticDatasetMapper`` (the reference)."""

from __future__ import annotations

import torch

from aeroseg.data.photometric import ColorAugSSD, JitterPlan
from aeroseg.data.transforms import (
    MaskUnseen,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotate90,
    Resize,
    training_transforms,
)

NONE = JitterPlan(brightness=None, contrast_first=True, contrast=None, saturation=None, hue=None)


def _sample(height: int = 40, width: int = 60, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), generator=g).float() / 255
    return {"image": image, "mask": torch.randint(0, 4, (height, width), generator=g), "stem": "s"}


def test_steps_are_the_reference_mappers_in_its_order():
    steps = training_transforms(384, [3]).transforms
    # MaskUnseen first (ours: unseen -> ignore), then ResizeShortestEdge, RandomCrop_CategoryAreaConstraint,
    # ColorAugSSDTransform, RandomFlip as in the mapper's from_config
    assert [type(s) for s in steps] == [MaskUnseen, Resize, RandomCrop, ColorAugSSD, RandomHorizontalFlip]
    resize, crop = steps[1], steps[2]
    assert (resize.size, resize.max_size) == (384, 1333)  # MIN_SIZE_TRAIN (384,), detectron2 MAX_SIZE_TRAIN
    assert (crop.size, crop.max_category_area, crop.pad_value) == (384, 1.0, 128 / 255)
    steps = training_transforms(384, [3], color_jitter=False, rotate=True).transforms
    assert [type(s) for s in steps] == [MaskUnseen, Resize, RandomCrop, RandomHorizontalFlip, RandomRotate90]


def test_pipeline_is_deterministic_under_a_seed():
    transform = training_transforms(32, [3])
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(transform(_sample()))
    assert torch.equal(outs[0]["image"], outs[1]["image"]) and torch.equal(outs[0]["mask"], outs[1]["mask"])
    assert not torch.equal(outs[0]["image"], outs[2]["image"])
    assert outs[0]["image"].shape == (3, 32, 32) and set(outs[0]["mask"].unique().tolist()) <= {0, 1, 2, 255}


def test_resize_rounds_half_up_and_caps_the_longer_side():
    assert Resize(384)._target(896, 1201) == (384, 515)  # 1201 * 384 / 896 = 514.7
    assert Resize(384, max_size=1333)._target(100, 1000) == (133, 1333)  # the long side capped


def test_crop_keeps_a_short_side_whole_and_pads_bottom_right():
    sample = {"image": torch.ones(3, 20, 50), "mask": torch.zeros(20, 50, dtype=torch.long)}
    torch.manual_seed(0)
    out = RandomCrop(32)(sample)
    assert out["mask"].shape == (32, 32)
    assert bool((out["mask"][:20] == 0).all()) and bool((out["mask"][20:] == 255).all())
    assert torch.allclose(out["image"][:, 20:], torch.full((3, 12, 32), 128 / 255))


def test_category_area_constraint_retries_single_class_windows():
    mask = torch.zeros(64, 64, dtype=torch.long)
    mask[:, 48:] = 1  # only windows reaching past column 48 hold two classes
    sample = {"image": torch.zeros(3, 64, 64), "mask": mask}
    torch.manual_seed(0)
    plain = [RandomCrop(16)(sample)["mask"].unique().numel() for _ in range(50)]
    constrained = [RandomCrop(16, max_category_area=0.9)(sample)["mask"].unique().numel() for _ in range(50)]
    assert sum(n == 2 for n in constrained) > sum(n == 2 for n in plain)


def test_color_jitter_draws_cover_every_branch_within_the_reference_ranges():
    torch.manual_seed(0)
    plans = [ColorAugSSD().draw() for _ in range(400)]
    for field, low, high in [("brightness", -32, 32), ("contrast", 0.5, 1.5), ("saturation", 0.5, 1.5)]:
        values = [getattr(p, field) for p in plans]
        drawn = [v for v in values if v is not None]
        assert 150 < len(drawn) < 250 and all(low <= v <= high for v in drawn)  # p = 0.5
    hues = [p.hue for p in plans if p.hue is not None]
    assert set(hues) <= set(range(-18, 19)) and min(hues) < -10 and max(hues) > 10
    assert 150 < sum(p.contrast_first for p in plans) < 250


def test_color_jitter_steps_on_known_pixels():
    image = torch.tensor([[[200.0, 10.0]], [[0.0, 10.0]], [[0.0, 10.0]]]) / 255  # red, dark grey
    out = ColorAugSSD.apply(image, JitterPlan(40.5, True, None, None, None))
    assert (out * 255).round().tolist() == [[[240, 50]], [[40, 50]], [[40, 50]]]  # +40.5, truncated
    out = ColorAugSSD.apply(image, JitterPlan(None, True, 1.5, None, None))
    assert (out * 255).round().tolist() == [[[255, 15]], [[0, 15]], [[0, 15]]]  # clipped at 255
    out = ColorAugSSD.apply(image, JitterPlan(None, True, None, 0.0, None))
    assert (out * 255).round().tolist() == [[[200, 10]], [[200, 10]], [[200, 10]]]  # grey, value kept
    out = ColorAugSSD.apply(image, JitterPlan(None, True, None, None, 60))  # 120°: red -> green
    assert (out * 255).round().tolist() == [[[0, 10]], [[200, 10]], [[0, 10]]]
    sample = _sample()
    assert torch.equal(ColorAugSSD.apply(sample["image"], NONE), sample["image"])
    assert torch.equal(ColorAugSSD()(sample)["mask"], sample["mask"])
