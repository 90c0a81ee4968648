"""Sliding-window inference: window placement, seamless blending, padding and the feature cache.

The stand-in models here are also used by the ``aeroseg predict`` tests.
"""

import pytest
import torch
from torch import Tensor, nn

from aeroseg.inference import FeatureCache, sliding_window_scores
from aeroseg.windows import blend_weight, window_starts
from tests.helpers.standins import LogitStandIn


def _class_weights(name: str) -> Tensor:
    """Fixed colour weights and bias (4 numbers) of a class, derived from its name."""
    generator = torch.Generator().manual_seed(sum(ord(c) * 31**i for i, c in enumerate(name)) % 2**31)
    return torch.randn(4, generator=generator)


class PixelModel(LogitStandIn):
    """Stand-in whose logit of class t depends only on each pixel's colour: w_t · (rgb - 0.5) + b_t."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(6.0))
        self.encoded = 0  # number of images that went through encode

    def encode(self, images: Tensor) -> Tensor:
        self.encoded += len(images)
        return images - 0.5  # (B, 3, H, W)

    def segment(self, feats: Tensor, classes: list[str]) -> Tensor:
        weights = torch.stack([_class_weights(c) for c in classes]).to(feats)  # (T, 4)
        logits = torch.einsum("tc,bchw->bthw", weights[:, :3], feats) + weights[:, 3, None, None]
        return self.gain * logits  # (B, T, H, W)

    def forward(self, images: Tensor, classes: list[str]) -> Tensor:
        return self.segment(self.encode(images), classes)


class ContextModel(PixelModel):
    """Stand-in that also sees its window: the logits add a term of the window's mean colour."""

    def segment(self, feats: Tensor, classes: list[str]) -> Tensor:
        weights = torch.stack([_class_weights(f"{c}/context") for c in classes]).to(feats)  # (T, 4)
        context = torch.einsum("tc,bc->bt", weights[:, :3], feats.mean(dim=(2, 3)))  # (B, T)
        return super().segment(feats, classes) / 3 + 10 * context[:, :, None, None]


@pytest.mark.parametrize(
    "length,window,overlap", [(300, 64, 0.25), (65, 64, 0.5), (1000, 512, 0.25), (64, 64, 0)]
)
def test_window_starts_cover_the_axis_with_the_overlap(length, window, overlap):
    starts = window_starts(length, window, overlap)
    assert starts[0] == 0 and starts[-1] == length - window
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
    assert all(
        a + window - b >= overlap * window - 1 for a, b in zip(starts, starts[1:], strict=False)
    )  # overlap kept
    assert all(b - a <= window for a, b in zip(starts, starts[1:], strict=False))  # no gap


def test_window_starts_of_a_short_axis_is_one_window():
    assert window_starts(40, 64, 0.25) == [0]
    with pytest.raises(ValueError):
        window_starts(100, 64, 1.0)


def test_blend_weight_is_symmetric_positive_and_peaks_at_the_centre():
    weight = blend_weight(64)
    assert weight.shape == (64, 64) and weight.min() > 0
    assert torch.equal(weight, weight.T) and torch.equal(weight, weight.flip(0))
    assert weight[32, 32] == weight.max() and weight[0, 0] == weight.min()


def test_tiled_scores_equal_whole_image_scores_for_a_pixel_model():
    model = PixelModel()
    image = torch.rand(3, 150, 131, generator=torch.Generator().manual_seed(0))
    classes = ["building", "road", "tree", "water"]
    tiled = sliding_window_scores(model, image, classes, window=48, overlap=0.25, batch_size=5)
    whole = torch.sigmoid(model(image[None], classes))[0]
    assert tiled.shape == (4, 150, 131) and tiled.dtype == torch.float32
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
    assert torch.equal(tiled.argmax(0), whole.argmax(0))


def test_image_smaller_than_the_window_is_padded_and_cropped_back():
    model = PixelModel()
    image = torch.rand(3, 20, 9, generator=torch.Generator().manual_seed(1))
    scores = sliding_window_scores(model, image, ["a", "b"], window=64)
    torch.testing.assert_close(scores, torch.sigmoid(model(image[None], ["a", "b"]))[0], atol=1e-6, rtol=0)


def test_batch_size_does_not_change_the_result():
    model = ContextModel()
    image = torch.rand(3, 100, 120, generator=torch.Generator().manual_seed(2))
    one = sliding_window_scores(model, image, ["a", "b", "c"], window=32, overlap=0.5, batch_size=1)
    many = sliding_window_scores(model, image, ["a", "b", "c"], window=32, overlap=0.5, batch_size=7)
    torch.testing.assert_close(one, many)


def test_blending_leaves_no_seam_between_windows():
    """Each window of ContextModel scores differently; blended, neighbouring pixels differ far less."""
    model = ContextModel()
    ramp = torch.linspace(0, 1, 200)
    image = torch.stack([ramp, ramp.flip(0), torch.full_like(ramp, 0.5)])[:, None, :].expand(3, 60, 200)
    scores = sliding_window_scores(model, image, ["a", "b"], window=40, overlap=0.5)
    windows = [torch.sigmoid(model(image[None, :, :, x : x + 40], ["a", "b"]))[0] for x in (0, 20)]
    pixel_step = (scores[:, :, 1:] - scores[:, :, :-1]).abs().max()
    window_step = (windows[0][:, :, 20:] - windows[1][:, :, :20]).abs().max()  # same pixels, two windows
    assert window_step > 0.05
    assert pixel_step < window_step / 4


def test_feature_cache_reuses_the_image_encoders_for_a_new_class_list():
    model = PixelModel()
    cache = FeatureCache(max_windows=16)
    image = torch.rand(3, 80, 80, generator=torch.Generator().manual_seed(3))
    first = sliding_window_scores(model, image, ["a", "b"], window=48, batch_size=2, cache=cache)
    encoded = model.encoded
    second = sliding_window_scores(model, image, ["c", "a"], window=48, batch_size=2, cache=cache)
    assert model.encoded == encoded and cache.hits == cache.misses == 2
    torch.testing.assert_close(second[1], first[0])
    other = image.flip(-1)
    sliding_window_scores(model, other, ["a"], window=48, batch_size=2, cache=cache)
    assert model.encoded == 2 * encoded  # new content, new features


def test_feature_cache_is_bounded_and_forgets_features_after_a_weight_update():
    model = PixelModel()
    cache = FeatureCache(max_windows=3)
    batches = [torch.full((2, 3, 8, 8), v) for v in (0.1, 0.2, 0.3)]
    for batch in batches:
        cache.features(model, batch)
    assert len(cache._entries) == 1  # 2 + 2 windows exceed 3: the oldest batch went
    cache.features(model, batches[-1])
    assert cache.hits == 1
    with torch.no_grad():
        model.gain.add_(1.0)  # an optimizer step updates parameters in place
    cache.features(model, batches[-1])
    assert cache.hits == 1 and cache.misses == 4
