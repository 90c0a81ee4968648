"""Training augmentation (docs/model.md §8) on dict samples ``{"image": 3×H×W float, "mask": H×W long, ...}``.

Every geometric transform moves image and mask together; masks are resampled with nearest neighbour
and padded with the ignore id. Randomness comes from torch's global generator, so a caller that seeds
it per sample (``aeroseg.training.stream``) gets reproducible augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from aeroseg.data.photometric import ColorAugSSD

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

    ``size`` int: the shorter side becomes ``size`` and the longer at most ``max_size``, keeping the aspect
    ratio, sides rounded half up (detectron2's ``ResizeShortestEdge``, CAT-Seg's mapper); (h, w): that exact size.
    """

    def __init__(self, size: int | tuple[int, int], max_size: int | None = None) -> None:
        self.size = size
        self.max_size = max_size

    def _target(self, height: int, width: int) -> tuple[int, int]:
        if not isinstance(self.size, int):
            return int(self.size[0]), int(self.size[1])
        scale = self.size / min(height, width)
        if self.max_size is not None and max(height, width) * scale > self.max_size:
            scale = self.max_size / max(height, width)
        return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))

    def __call__(self, sample: Sample) -> Sample:
        image, mask = sample["image"], sample["mask"]
        size = self._target(*image.shape[-2:])
        if size == tuple(image.shape[-2:]):
            return sample
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        return {**sample, "image": image.clamp(0.0, 1.0), "mask": mask}


class ResizeShortestEdge:
    """:class:`Resize` to a shorter side drawn uniformly from ``sizes`` per sample (detectron2's
    ``ResizeShortestEdge`` with ``sample_style="choice"``: SAN's and SCAN's multi-scale ``MIN_SIZE_TRAIN``)."""

    def __init__(self, sizes: Sequence[int], max_size: int) -> None:
        self.resizes = [Resize(int(size), max_size=max_size) for size in sizes]

    def __call__(self, sample: Sample) -> Sample:
        return self.resizes[int(torch.randint(0, len(self.resizes), ()))](sample)


class PadToMultiple:
    """Pad image and mask at the bottom and right to multiples of ``divisor`` (image ``pad_value``, 128/255;
    mask ``ignore_index``): the last step of Mask2Former's ``MaskFormerSemanticDatasetMapper``
    (``SIZE_DIVISIBILITY``; SAN, SCAN and SED use its copy), after the flip. The official pads to
    ``divisor`` itself, the same for crops no larger than it (what the configs give)."""

    def __init__(self, divisor: int, ignore_index: int = 255, *, pad_value: float = 128 / 255) -> None:
        self.divisor = divisor
        self.ignore_index = ignore_index
        self.pad_value = pad_value

    def __call__(self, sample: Sample) -> Sample:
        image, mask = sample["image"], sample["mask"]
        pad_h, pad_w = -mask.shape[0] % self.divisor, -mask.shape[1] % self.divisor
        if not (pad_h or pad_w):
            return sample
        image = F.pad(image, (0, pad_w, 0, pad_h), value=self.pad_value)
        mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
        return {**sample, "image": image, "mask": mask}


class RandomCrop:
    """A random ``size``×``size`` window inside the sample, as detectron2's ``RandomCrop_CategoryAreaConstraint``
    (CAT-Seg's mapper): a side shorter than ``size`` is kept whole and the crop is then padded at the bottom and
    right to ``size`` (image ``pad_value``, 128/255 as the mapper's ``F.pad(value=128)``; mask ``ignore_index``);
    with ``pad=False`` it is left unpadded (a :class:`PadToMultiple` pads it after the other augmentations).

    ``max_category_area`` < 1 retries (up to 10 draws, then keeps the last) a window where one class covers at
    least that fraction of the labelled pixels or where fewer than two classes appear.
    """

    def __init__(
        self,
        size: int,
        ignore_index: int = 255,
        *,
        max_category_area: float = 1.0,
        pad_value: float = 128 / 255,
        pad: bool = True,
    ) -> None:
        self.size = size
        self.ignore_index = ignore_index
        self.max_category_area = max_category_area
        self.pad_value = pad_value
        self.pad = pad

    def _window(self, height: int, width: int) -> tuple[slice, slice]:
        ch, cw = min(self.size, height), min(self.size, width)
        top = int(torch.randint(0, height - ch + 1, ()))
        left = int(torch.randint(0, width - cw + 1, ()))
        return slice(top, top + ch), slice(left, left + cw)

    def _accept(self, mask: torch.Tensor) -> bool:
        _, counts = mask[mask != self.ignore_index].unique(return_counts=True)
        return len(counts) > 1 and int(counts.max()) < int(counts.sum()) * self.max_category_area

    def __call__(self, sample: Sample) -> Sample:
        image, mask = sample["image"], sample["mask"]
        rows, cols = self._window(*mask.shape)
        if self.max_category_area < 1.0:
            for _ in range(9):
                if self._accept(mask[rows, cols]):
                    break
                rows, cols = self._window(*mask.shape)
        image, mask = image[:, rows, cols], mask[rows, cols]
        pad_h, pad_w = self.size - mask.shape[0], self.size - mask.shape[1]
        if self.pad and (pad_h or pad_w):
            image = F.pad(image, (0, pad_w, 0, pad_h), value=self.pad_value)
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
        return {**sample, "image": image, "mask": mask}


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
    size: int,
    unseen_ids: Sequence[int],
    *,
    ignore_index: int = 255,
    max_category_area: float = 1.0,
    color_jitter: bool = True,
    rotate: bool = False,
    min_sizes: Sequence[int] | None = None,
    max_size: int = 1333,
    size_divisibility: int = 0,
) -> Compose:
    """The steps of CAT-Seg's ``MaskFormerSemanticDatasetMapper`` (docs/model.md §8), unseen classes first set to
    ``ignore_index``: resize the shorter side to ``size`` (longer at most ``max_size``, detectron2's
    ``MAX_SIZE_TRAIN``, 1333 by default), random ``size``² crop, ColorAugSSD (``color_jitter``), horizontal
    flip; then our random 90° rotation when ``rotate`` (the reference has none).

    The settings of SED's, SAN's and SCAN's copies of that mapper: ``min_sizes``, the shorter side drawn per
    sample among them (``MIN_SIZE_TRAIN``, "choice") instead of ``size``; ``size_divisibility`` > 0, crops
    padded at the end to its multiples (:class:`PadToMultiple`) instead of to ``size`` right after cropping.
    """
    resize = ResizeShortestEdge(min_sizes, max_size) if min_sizes else Resize(size, max_size=max_size)
    steps: list[Callable[[Sample], Sample]] = [
        MaskUnseen(unseen_ids, ignore_index),
        resize,
        RandomCrop(size, ignore_index, max_category_area=max_category_area, pad=not size_divisibility),
    ]
    if color_jitter:
        steps.append(ColorAugSSD())
    steps.append(RandomHorizontalFlip())
    if rotate:
        steps.append(RandomRotate90())
    if size_divisibility:
        steps.append(PadToMultiple(size_divisibility, ignore_index))
    return Compose(steps)
