"""Weights filled deterministically from each tensor's key name, shared by the fixture scripts (which fill
the official models) and the tests (which fill ours through the key mapping): only the key → shape list is
committed, and both sides rebuild the same numbers."""

from __future__ import annotations

import hashlib
import math

import torch


def hashed_tensor(key: str, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """A float32 tensor of ``shape`` seeded by ``key``: scalars and 1-D ``*weight`` (norms) ≈ 1 + 0.1·N(0, 1),
    other 1-D tensors 0.1·N(0, 1), matrices and kernels N(0, 1 / fan_in)."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") % (2**63)
    x = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
    if len(shape) == 0 or (len(shape) == 1 and key.endswith("weight")):
        return 1 + 0.1 * x
    if len(shape) == 1:
        return 0.1 * x
    return x / math.sqrt(math.prod(shape[1:]))


def hashed_state(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Every key of ``shapes`` filled by :func:`hashed_tensor`."""
    return {key: hashed_tensor(key, tuple(shape)) for key, shape in shapes.items()}
