"""The deterministic training stream: global sample position -> augmented (image, mask).

Epoch ``e`` visits the training images in the order ``randperm(N)`` seeded with ``seed + e`` (as
``DistributedSampler`` does); the stream is those epochs back to back, and step ``s`` takes positions
``s*B .. s*B+B-1`` (B the global batch). Rank ``r`` of ``W`` processes loads the slice
``s*B + r*B/W .. s*B + (r+1)*B/W - 1``. Each sample's augmentation is seeded by ``(seed, position)``, so a
sample is a pure function of its position: the data order needs no state beyond the step, resuming is exact,
and the batches do not depend on the number of processes or data-loading workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from aeroseg.data import DatasetInfo


def seen_class_lut(info: DatasetInfo) -> torch.Tensor:
    """A 256-entry table: dataset class id -> index into ``info.seen``; unseen classes and ignore -> ignore."""
    lut = torch.full((256,), info.ignore_index, dtype=torch.long)
    for index, class_id in enumerate(info.seen_ids):
        lut[class_id] = index
    return lut


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator (which the transforms draw from) inside the block, restoring it after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class TrainingStream(Dataset):
    """Map-style view of the infinite stream: ``stream[position]`` -> (image 3×H×W float, mask H×W long).

    ``dataset`` yields dict samples (``image``, ``mask``); ``transform`` augments such a dict drawing from torch's
    global generator (seeded here per sample); mask ids then become indices into the seen classes (unseen
    classes -> ``info.ignore_index``).
    """

    def __init__(
        self, dataset: Any, info: DatasetInfo, *, seed: int, transform: Callable[[dict], dict]
    ) -> None:
        self.dataset = dataset
        self.seed = seed
        self.transform = transform
        self.lut = seen_class_lut(info)
        self._order: tuple[int, torch.Tensor] | None = None  # (epoch, permutation) of the last epoch used

    def index(self, position: int) -> int:
        """Dataset index of the sample at ``position`` of the stream."""
        epoch, offset = divmod(position, len(self.dataset))
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._order = (epoch, torch.randperm(len(self.dataset), generator=generator))
        return int(self._order[1][offset])

    def __len__(self) -> int:  # the stream is infinite; this is one epoch
        return len(self.dataset)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.dataset[self.index(position)]
        with _seeded(self.seed * 2**32 + position):
            sample = self.transform(sample)
        return sample["image"], self.lut[sample["mask"]]


class StepSampler(Sampler[int]):
    """Stream positions of this rank's share of every global batch, for steps ``start_step .. steps-1``."""

    def __init__(self, *, start_step: int, steps: int, batch_size: int, rank: int, world_size: int) -> None:
        self.start_step, self.steps = start_step, steps
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.steps):
            first = step * self.batch_size + self.rank * self.local_batch
            yield from range(first, first + self.local_batch)

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.local_batch
