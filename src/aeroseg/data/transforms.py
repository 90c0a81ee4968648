"""Training augmentation (DESIGN §7) on dict samples ``{"image": 3×H×W float, "mask": H×W long, ...}``.

Every geometric transform moves image and mask together; masks are resampled with nearest neighbour
and padded with the ignore id. Randomness comes from torch's global generator, so a caller that seeds
it per sample (``aeroseg.training.stream``) gets reproducible augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Sample = dict  # {"image": float 3×H×W, "mask": long H×W, "stem": str, ...}


def mask_unseen(mask: torch.Tensor, unseen_ids: Sequence[int], ignore_index: int = 255) -> torch.Tensor:
    """A copy of ``mask`` with every pixel of an unseen class set to ``ignore_index``."""
    out = mask.clone()
    if len(unseen_ids):
        out[torch.isin(mask, torch.as_tensor(list(unseen_ids), dtype=mask.dtype))] = ignore_index
    return out


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample


class Resize:
    """Resize image (bilinear, antialiased) and mask (nearest).

    ``size`` int: the shorter side becomes ``size``, keeping the aspect ratio; (h, w): that exact size.
    """

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = size

    def _target(self, height: int, width: int) -> tuple[int, int]:
        if not isinstance(self.size, int):
            return int(self.size[0]), int(self.size[1])
        scale = self.size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def __call__(self, sample: Sample) -> Sample:
        image, mask = sample["image"], sample["mask"]
        size = self._target(*image.shape[-2:])
        if size == tuple(image.shape[-2:]):
            return sample
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
        return {**sample, "image": image.clamp(0.0, 1.0), "mask": mask}


class RandomCrop:
    """Crop a random ``size``×``size`` window; smaller samples are first padded (image 0, mask ignore)."""

    def __init__(self, size: int, ignore_index: int = 255) -> None:
        self.size = size
        self.ignore_index = ignore_index

    def __call__(self, sample: Sample) -> Sample:
        image, mask = sample["image"], sample["mask"]
        height, width = image.shape[-2:]
        pad_h, pad_w = max(0, self.size - height), max(0, self.size - width)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
            height, width = image.shape[-2:]
        top = int(torch.randint(0, height - self.size + 1, ()))
        left = int(torch.randint(0, width - self.size + 1, ()))
        window = (slice(top, top + self.size), slice(left, left + self.size))
        return {**sample, "image": image[:, window[0], window[1]], "mask": mask[window]}


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample) -> Sample:
        if float(torch.rand(())) >= self.p:
            return sample
        return {**sample, "image": sample["image"].flip(-1), "mask": sample["mask"].flip(-1)}


class RandomRotate90:
    """Rotate by k·90° counter-clockwise, k uniform in {0, 1, 2, 3} (overhead images have no 'up')."""

    def __call__(self, sample: Sample) -> Sample:
        k = int(torch.randint(0, 4, ()))
        if k == 0:
            return sample
        image = torch.rot90(sample["image"], k, dims=(-2, -1))
        mask = torch.rot90(sample["mask"], k, dims=(-2, -1))
        return {**sample, "image": image, "mask": mask}


class MaskUnseen:
    """Set the pixels of unseen classes to ignore (:func:`mask_unseen`), so training never sees them."""

    def __init__(self, unseen_ids: Sequence[int], ignore_index: int = 255) -> None:
        self.unseen_ids = list(unseen_ids)
        self.ignore_index = ignore_index

    def __call__(self, sample: Sample) -> Sample:
        return {**sample, "mask": mask_unseen(sample["mask"], self.unseen_ids, self.ignore_index)}


def training_transforms(
    size: int, unseen_ids: Sequence[int], *, ignore_index: int = 255, rotate: bool = True
) -> Compose:
    """DESIGN §7 augmentation: resize the shorter side to ``size``, random ``size``² crop, horizontal flip,
    random 90° rotation (``rotate``), then unseen classes -> ``ignore_index``."""
    steps: list[Callable[[Sample], Sample]] = [
        Resize(size),
        RandomCrop(size, ignore_index),
        RandomHorizontalFlip(),
    ]
    if rotate:
        steps.append(RandomRotate90())
    steps.append(MaskUnseen(unseen_ids, ignore_index))
    return Compose(steps)
