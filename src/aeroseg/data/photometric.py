"""ColorAugSSD photometric jitter (SSD's, as detectron2's PointRend ``ColorAugSSDTransform`` that CAT-Seg's
mapper applies, ``INPUT.COLOR_AUG_SSD: True`` in CAT-Seg's ``configs/config.yaml``).

Steps on the 0–255 scale: brightness (p 0.5, add U(-32, 32)); then with equal odds either contrast, saturation,
hue or saturation, hue, contrast; contrast (p 0.5, multiply by U(0.5, 1.5)); saturation (p 0.5, multiply the
HSV saturation by U(0.5, 1.5)); hue (p 0.5, shift the hue by an integer in [-18, 18] of OpenCV's 0–180 hue
scale, i.e. 2° a unit). Each step clips to [0, 255] and truncates to integers as the reference's uint8
arithmetic does, and the HSV steps follow OpenCV's 8-bit conversions of an image (fixed-point hue in 2° units and
saturation; back to RGB by the sector formula in float32, truncated). ``tests/test_reference_fixture.py``
compares it with detectron2's own transform run with OpenCV 4.6 on the same draws: 9 of 10 plans bit-exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Sample = dict  # {"image": float 3×H×W in [0, 1], "mask": long H×W, ...}


@dataclass(frozen=True)
class JitterPlan:
    """The random draws of one application; ``None`` = the step is skipped."""

    brightness: float | None  # added on the 0–255 scale
    contrast_first: bool  # contrast before saturation and hue (else after them)
    contrast: float | None  # factor
    saturation: float | None  # factor of the HSV saturation
    hue: int | None  # shift in OpenCV hue units (2°)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _coin() -> bool:
    return bool(torch.randint(0, 2, ()))


def _to_uint8_grid(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 255).floor()  # numpy's clip then astype(uint8)


def _hsv_uint8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB on the 0–255 integer grid -> OpenCV's 8-bit HSV: hue 0–179 (2° a unit), saturation and value 0–255,
    with its 12-bit fixed-point divisions (hue = hue° / 2 and saturation = 255·(max-min)/max, rounded)."""
    r, g, b = x.long()
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    sdiv = torch.where(
        v > 0, torch.round(255 * 4096 / v.clamp(min=1)), torch.zeros_like(v, dtype=torch.float)
    )
    hdiv = torch.where(diff > 0, torch.round(180 * 4096 / (6 * diff.clamp(min=1))), torch.zeros_like(sdiv))
    s = (diff * sdiv.long() + 2048) >> 12
    num = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (num * hdiv.long() + 2048) >> 12
    h = torch.where(h < 0, h + 180, h)
    return h.float(), s.float(), v.float()


def _from_hsv_uint8(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit HSV -> RGB of an image: the sector formula in float32 on s and v scaled to [0, 1], then
    truncated to the 0–255 integer grid (what its vectorised path does; 78 can come out as 77)."""
    h6 = h.float() * torch.tensor(6 / 180, dtype=torch.float32)
    s1, v1 = s.float() * torch.tensor(1 / 255, dtype=torch.float32), v.float() * torch.tensor(1 / 255)
    sector = torch.floor(h6)
    f = h6 - sector
    p, q, t = v1 * (1 - s1), v1 * (1 - s1 * f), v1 * (1 - s1 * (1 - f))
    choices = {  # sector -> (r, g, b)
        0: (v1, t, p), 1: (q, v1, p), 2: (p, v1, t), 3: (p, q, v1), 4: (t, p, v1), 5: (v1, p, q),
    }  # fmt: skip
    rgb = torch.zeros(3, *h.shape)
    for k, channels in choices.items():
        rgb = torch.where(sector == k, torch.stack(channels), rgb)
    return torch.floor(rgb * torch.tensor(255.0, dtype=torch.float32)).clamp(0, 255)


class ColorAugSSD:
    """Photometric jitter of the image (the mask is untouched); draws from torch's global generator."""

    def __init__(
        self,
        brightness_delta: float = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def draw(self) -> JitterPlan:
        """The random draws, in the reference's order."""
        brightness = _uniform(-self.brightness_delta, self.brightness_delta) if _coin() else None
        contrast_first = _coin()
        draws: dict[str, float | int | None] = {}
        order = ("contrast", "saturation", "hue") if contrast_first else ("saturation", "hue", "contrast")
        for step in order:
            if not _coin():
                draws[step] = None
            elif step == "hue":
                draws[step] = int(torch.randint(-self.hue_delta, self.hue_delta + 1, ()))
            else:
                draws[step] = _uniform(*getattr(self, f"{step}_range"))
        return JitterPlan(brightness, contrast_first, **draws)  # type: ignore[arg-type]

    @staticmethod
    def apply(image: torch.Tensor, plan: JitterPlan) -> torch.Tensor:
        """image: 3×H×W float in [0, 1] -> the jittered image, a multiple of 1/255 in [0, 1]."""
        x = _to_uint8_grid(image * 255)
        if plan.brightness is not None:
            x = _to_uint8_grid(x + plan.brightness)

        def contrast(x: torch.Tensor) -> torch.Tensor:
            return x if plan.contrast is None else _to_uint8_grid(x * plan.contrast)

        if plan.contrast_first:
            x = contrast(x)
        if plan.saturation is not None:
            h, s, v = _hsv_uint8(x)
            x = _from_hsv_uint8(h, _to_uint8_grid(s * plan.saturation), v)
        if plan.hue is not None:
            h, s, v = _hsv_uint8(x)
            x = _from_hsv_uint8((h + plan.hue) % 180, s, v)
        if not plan.contrast_first:
            x = contrast(x)
        return x / 255

    def __call__(self, sample: Sample) -> Sample:
        return {**sample, "image": self.apply(sample["image"], self.draw())}
