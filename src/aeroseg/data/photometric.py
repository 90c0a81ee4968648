"""ColorAugSSD photometric jitter (SSD's, as detectron2's PointRend ``ColorAugSSDTransform`` that CAT-Seg's
mapper applies, ``INPUT.COLOR_AUG_SSD: True`` in CAT-Seg's ``configs/config.yaml``).

Steps on the 0–255 scale: brightness (p 0.5, add U(-32, 32)); then with equal odds either contrast, saturation,
hue or saturation, hue, contrast; contrast (p 0.5, multiply by U(0.5, 1.5)); saturation (p 0.5, multiply the
HSV saturation by U(0.5, 1.5)); hue (p 0.5, shift the hue by an integer in [-18, 18] of OpenCV's 0–180 hue
scale, i.e. 2° a unit). Each step clips to [0, 255] and truncates to integers as the reference's uint8
arithmetic does; the HSV conversion is done in floating point (the reference's OpenCV uint8 HSV round trip also
rounds the hue to 2° and the saturation to 1/255).
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


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """3×H×W RGB on 0–255 -> hue in degrees [0, 360), saturation [0, 1], value 0–255."""
    r, g, b = rgb
    v, _ = rgb.max(0)
    delta = v - rgb.min(0).values
    s = torch.where(v > 0, delta / v.clamp(min=1e-12), torch.zeros_like(v))
    safe = delta.clamp(min=1e-12)
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(delta > 0, (60 * h) % 360, torch.zeros_like(h))
    return torch.stack([h, s, v])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv

    def channel(n: float) -> torch.Tensor:
        k = (n + h / 60) % 6
        return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)

    return torch.stack([channel(5), channel(3), channel(1)])


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
            hsv = rgb_to_hsv(x)
            hsv[1] = (hsv[1] * plan.saturation).clamp(0, 1)
            x = _to_uint8_grid(hsv_to_rgb(hsv).round())
        if plan.hue is not None:
            hsv = rgb_to_hsv(x)
            hsv[0] = (hsv[0] + 2 * plan.hue) % 360
            x = _to_uint8_grid(hsv_to_rgb(hsv).round())
        if not plan.contrast_first:
            x = contrast(x)
        return x / 255

    def __call__(self, sample: Sample) -> Sample:
        return {**sample, "image": self.apply(sample["image"], self.draw())}
