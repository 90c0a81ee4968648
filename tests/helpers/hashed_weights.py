"""Checkpoints whose every tensor is a pure function of its key name and shape, so that a fixture script
(which runs the official code) and the tests build the same weights from a committed key -> shape list.

Two fill conventions exist because two committed fixtures were made with them: the CAT-Seg/OVRS fixture
(:func:`hashed_tensor`, :func:`hashed_state_dict`) and the SegEarth-OV fixture (:func:`hashed_state`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

import torch


def hashed_tensor(
    key: str,
    shape: Sequence[int],
    *,
    vector_scale: float = 0.02,
    norm_suffix: str = ".weight",
    scalar_is_norm: bool = False,
) -> torch.Tensor:
    """A float32 tensor of ``shape`` drawn from a generator seeded by the SHA-256 of ``key``.

    1-D tensors whose key ends in ``norm_suffix`` (LayerNorm / GroupNorm scales), and 0-D ones when
    ``scalar_is_norm``, are ``1 + 0.1·N(0, 1)``; other 0-D/1-D tensors (biases, embeddings)
    ``vector_scale·N(0, 1)``; matrices / kernels ``N(0, 1) / sqrt(fan)`` with ``fan`` the product of all but
    the first dimension, so that activations keep a unit scale through deep stacks.
    """
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)
    values = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
    if (len(shape) == 1 and key.endswith(norm_suffix)) or (len(shape) == 0 and scalar_is_norm):
        return 1 + 0.1 * values
    if len(shape) <= 1:
        return vector_scale * values
    return values / math.sqrt(math.prod(shape[1:]))


def hashed_state_dict(key_shapes: Iterable[tuple[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
    """``{key: hashed_tensor(key, shape)}`` for every entry of ``key_shapes`` (the CAT-Seg fixture's fill)."""
    return {key: hashed_tensor(key, shape) for key, shape in key_shapes}


def hashed_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Every key of ``shapes`` filled as the SegEarth-OV fixture was: 1-D non-norm tensors 0.1·N(0, 1),
    scalars and 1-D ``*weight`` tensors as norms."""
    return {
        key: hashed_tensor(key, tuple(shape), vector_scale=0.1, norm_suffix="weight", scalar_is_norm=True)
        for key, shape in shapes.items()
    }
