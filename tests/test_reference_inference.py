"""The reference evaluation protocol (CAT-Seg's ``inference_sliding_window``) against a hand-built average."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.inference import reference_scores, shortest_edge_size
from aeroseg.windows import stride_starts as reference_starts
from tests.helpers.standins import LogitStandIn
from tests.helpers.tiny import build_tiny_model

CLASSES = ["ship", "plane", "harbor"]


@pytest.fixture(scope="module")
def tiny_model():
    return build_tiny_model(preset="aeroseg").eval()


def test_equals_a_hand_built_crop_and_global_average(tiny_model):
    torch.set_num_threads(1)
    image = torch.rand(3, 90, 130, generator=torch.Generator().manual_seed(0))  # not square
    got = reference_scores(tiny_model, image, CLASSES)
    assert got.shape == (3, 90, 130)

    # by hand, with Unfold/Fold as the reference: short side 640 (-> 640×924), stretched to 640², 4 crops
    resized = F.interpolate(
        image[None], size=(640, 924), mode="bilinear", antialias=True, align_corners=False
    )
    square = F.interpolate(resized, size=(640, 640), mode="bilinear", align_corners=False)
    unfold, fold = nn.Unfold(384, stride=256), nn.Fold((640, 640), 384, stride=256)
    crops = unfold(square).view(3, 384, 384, -1).permute(3, 0, 1, 2)  # (L, 3, 384, 384)
    assert len(crops) == 4
    global_view = F.interpolate(resized, size=(384, 384), mode="bilinear", align_corners=False)
    with torch.no_grad():
        local = torch.sigmoid(tiny_model(crops, CLASSES))  # (4, T, 384, 384)
        glob = torch.sigmoid(tiny_model(global_view, CLASSES))
    count = fold(unfold(torch.ones(1, 1, 640, 640)))
    local = fold(local.flatten(1).T[None]) / count  # (1, T, 640, 640)
    glob = F.interpolate(glob, size=(640, 640), mode="bilinear", align_corners=False)
    expected = F.interpolate((local + glob) / 2, size=(90, 130), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_reference_windows_are_catsegs_and_cover_any_size():
    assert reference_starts(640, 384, int(384 * (1 - 0.333))) == [0, 256]  # kernel 384, overlap 0.333
    for height, width in [(640, 900), (500, 777), (384, 1000)]:
        covered = torch.zeros(height, width, dtype=torch.bool)
        for y in reference_starts(height, 384, 256):
            for x in reference_starts(width, 384, 256):
                assert y + 384 <= height and x + 384 <= width
                covered[y : y + 384, x : x + 384] = True
        assert bool(covered.all()), (height, width)


def test_every_pixel_of_a_non_square_image_gets_local_and_global_views():
    class Constant(LogitStandIn):
        """Logit 0 in the windows (p = 0.5) and 50 in the global view, the last (p = 1): 0.75 everywhere."""

        calls = 0

        def encode(self, images):
            return images

        def segment(self, feats, classes):
            self.calls += 1
            value = 50.0 if self.calls == 5 else 0.0  # one view per call (batch_size 1): 4 windows, global
            return torch.full((feats.shape[0], len(classes), *feats.shape[-2:]), value)

    got = reference_scores(Constant(), torch.rand(3, 70, 250), ["a", "b"], batch_size=1)
    assert got.shape == (2, 70, 250)
    torch.testing.assert_close(got, torch.full_like(got, 0.75))


def test_shortest_edge_size_is_detectron2s():
    assert shortest_edge_size(896, 896, 640, 2560) == (640, 640)
    assert shortest_edge_size(256, 256, 640, 2560) == (640, 640)  # DLRSD upsampled
    assert shortest_edge_size(100, 1000, 640, 2560) == (256, 2560)  # the long side capped
