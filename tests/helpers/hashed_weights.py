"""Checkpoints whose every tensor is a pure function of its key name and shape, so that the fixture script
(which runs the official code) and the tests build the same weights from a committed key -> shape list."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

import torch


def hashed_tensor(key: str, shape: Sequence[int]) -> torch.Tensor:
    """A float32 tensor of ``shape`` drawn from a generator seeded by the SHA-256 of ``key``.

    1-D ``*.weight`` tensors (LayerNorm / GroupNorm scales) are ``1 + 0.1·N(0, 1)``, other 0-D/1-D tensors
    (biases, embeddings) ``0.02·N(0, 1)``, and matrices / kernels ``N(0, 1) / sqrt(fan)`` with ``fan`` the
    product of all but the first dimension, so that activations keep a unit scale through deep stacks.
    """
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)
    values = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
    if len(shape) == 1 and key.endswith(".weight"):
        return 1 + 0.1 * values
    if len(shape) <= 1:
        return 0.02 * values
    return values / math.sqrt(math.prod(shape[1:]))


def hashed_state_dict(key_shapes: Iterable[tuple[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
    """``{key: hashed_tensor(key, shape)}`` for every entry of ``key_shapes``."""
    return {key: hashed_tensor(key, shape) for key, shape in key_shapes}
