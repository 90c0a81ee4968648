"""The one interface between a model and everything that runs it (predict, serve, distributed, evaluate).

Every model family implements :class:`Segmenter`: ``encode`` computes the class-independent part of a batch
of images once, ``probabilities`` answers a class list from it, so a new class list on the same image never
re-runs the image encoders (as SAM's predictor keeps the image embedding between prompts). The consumers
know nothing else of a model: windows of ``window`` pixels, float images in ``value_range``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Segmenter(Protocol):
    """What a model offers to the code that runs it."""

    window: int  # the window side, in pixels, it is run at by default (each window is resized as it needs)
    value_range: tuple[float, float]  # the range of the float images ``encode`` takes (uint8 is scaled)

    def encode(self, images: torch.Tensor) -> Any:
        """The class-independent features of ``images`` B×3×H×W."""
        ...

    def probabilities(self, features: Any, classes: Sequence[str]) -> torch.Tensor:
        """B×T×H×W float32 probabilities in [0, 1] of ``classes`` from :meth:`encode`'s features."""
        ...


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
