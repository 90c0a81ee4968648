"""Guidance maps are shrunk to the correlation grid with a low-pass filter by default (``guidance_resize``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aeroseg.config import AerOSegConfig
from aeroseg.modeling.guidance_encoder import _resize
from tests.helpers.tiny import build_tiny_model


def test_default_is_antialiased_and_the_modes_differ_on_a_fine_pattern():
    assert AerOSegConfig().guidance_resize == "antialias"
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2  # the finest pattern of a 64² map
    x = checker.float()[None, None]
    anti, area, plain = (_resize(x, 24, mode) for mode in ("antialias", "area", "bilinear"))
    torch.testing.assert_close(anti, F.interpolate(x, size=(24, 24), mode="bilinear", antialias=True))
    torch.testing.assert_close(area, F.interpolate(x, size=(24, 24), mode="area"))
    # a low-pass filter brings the checkerboard near its mean 0.5; plain bilinear keeps aliased extremes
    assert (anti - 0.5).abs().max() < 0.01 and (area - 0.5).abs().max() < 0.06
    assert (plain - 0.5).abs().max() > 0.2  # measured: antialias 0.002, area 0.056, bilinear 0.222
    up = torch.rand(1, 2, 24, 24)
    for mode in ("antialias", "area", "bilinear"):  # enlarging is plain bilinear in every mode
        torch.testing.assert_close(_resize(up, 48, mode), F.interpolate(up, size=(48, 48), mode="bilinear"))


@pytest.mark.parametrize("preset", ["aeroseg", "aeroseg-sam2-hiera-b+"])
def test_the_config_field_reaches_the_encoder(preset):
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = {}
    for mode in ("antialias", "bilinear"):
        model = build_tiny_model(preset=preset, guidance_resize=mode).eval()
        assert model.guidance_encoder.resize == mode
        with torch.no_grad():
            out[mode] = model.guidance_encoder(images, 3).final  # the tiny maps (4² or more) shrunk to 3²
    assert not torch.allclose(out["antialias"], out["bilinear"])
    with pytest.raises(ValueError, match="guidance_resize"):
        AerOSegConfig(guidance_resize="cubic")
