"""The image tensors a model accepts: float B×3×H×W in [0, 1], or uint8 B×3×H×W in 0..255 (scaled here)."""

from __future__ import annotations

import torch


def unit_images(images: torch.Tensor) -> torch.Tensor:
    """``images`` (B×3×H×W) as floats in [0, 1]: uint8 is divided by 255, floats pass unchanged.

    Raises ``TypeError`` (one line) for other dtypes (bool, integer types other than uint8) and
    ``ValueError`` for a tensor that is not B×3×H×W.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B×3×H×W, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise TypeError(
            f"images must be float in [0, 1] or uint8 in 0..255, got {images.dtype}; convert them first"
        )
    return images
