"""The canonical segmentation dataset: ``DIR/dataset.yaml`` plus ``DIR/<split>/{images,masks}/``.

Layout (written by ``aeroseg prepare``, accepted for any user data)::

    DIR/dataset.yaml                      # name, classes, unseen, ignore_index (see info.py)
    DIR/train/images/<stem>.png|jpg|tif   # RGB; tif may have more bands, the first 3 are used
    DIR/train/masks/<stem>.png            # one channel uint8: class ids, 255 = ignore
    DIR/val/...                           # same as train

Styled after torchgeo's datasets: dict samples, optional ``transforms``, and a dedicated error that
names what is missing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from torch.utils.data import Dataset

from aeroseg.data.info import DatasetInfo
from aeroseg.errors import DatasetNotFoundError, UserError
from aeroseg.raster import UINT8_RANGE, RasterSource, to_unit

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_TIFF = (".tif", ".tiff")
_JPEG = (".jpg", ".jpeg")
T = TypeVar("T")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """The first three bands of an image as an H×W×3 array of its own dtype.

    PNG and JPEG are read with PIL (grey and palette images become RGB), TIFF with rasterio; a
    single-band TIFF is repeated to three bands.
    """
    path = Path(path)
    if path.suffix.lower() in _TIFF:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if src.count == 2:
                    raise UserError(f"{path} has 2 bands; images need 1 (grey) or at least 3 (RGB) bands")
                bands = src.read([1, 1, 1] if src.count == 1 else [1, 2, 3])  # 3×H×W
        return np.ascontiguousarray(bands.transpose(1, 2, 0))
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """An image as a float32 3×H×W tensor in [0, 1], by the pixel rule of ``aeroseg predict`` and ``serve``
    (:mod:`aeroseg.raster`): uint8 /255; floats in [0, 1] as they are, in [0, 255] /255; any other type or
    range by each band's 2nd–98th percentiles. The bands are chosen as there too (colour bands, palette,
    grey repeated). JPEGs are decoded by PIL (as the reference code reads them), then scaled the same way.
    """
    path = Path(path)
    if path.suffix.lower() in _JPEG:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB")).transpose(2, 0, 1)  # 3×H×W uint8
        return torch.from_numpy(to_unit(array, np.array([UINT8_RANGE] * 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with RasterSource(str(path)) as source:
            image, _ = source.read(Window(0, 0, source.width, source.height))
    return torch.from_numpy(np.ascontiguousarray(image))


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """A mask PNG (one channel of class ids, mode L or P) as an int64 H×W tensor."""
    with Image.open(path) as image:
        if image.mode not in ("L", "P"):
            raise UserError(
                f"mask {path} is a {image.mode} image; masks are single-channel uint8 class ids (mode L)"
            )
        return torch.from_numpy(np.asarray(image).astype(np.int64))


def check_mask_ids(
    mask: np.ndarray | torch.Tensor, num_classes: int, ignore_index: int, path: str | os.PathLike
) -> None:
    """Raise a one-line :class:`UserError` naming ``path`` and the id if ``mask`` holds a value that is
    neither a class id (0..num_classes-1) nor ``ignore_index``."""
    array = np.asarray(mask)
    labelled = array[array != ignore_index]
    if labelled.size == 0 or (labelled.min() >= 0 and labelled.max() < num_classes):
        return
    values = np.unique(labelled)
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise UserError(
            f"mask {path} holds class id {int(bad[0])}, outside the {num_classes} classes "
            f"(ids 0..{num_classes - 1}, {ignore_index} = ignore); fix the mask or the class list"
        )


def single_line_errors(batches: Iterable[T]) -> Iterator[T]:
    """Iterate a ``DataLoader``, turning a :class:`UserError` raised in a worker process (which the loader
    re-raises with the worker's traceback in its message) back into the worker's one-line message."""
    try:
        yield from batches
    except UserError as error:
        text = str(error)
        if not text.startswith("Caught UserError"):
            raise
        last = text.strip().splitlines()[-1]  # "aeroseg.errors.UserError: <message>"
        raise UserError(last.split("Error: ", 1)[-1]) from None


class SegmentationDataset(Dataset):
    """One split of a dataset in the canonical layout.

    ``dataset[i]`` is ``{"image": float32 3×H×W in [0, 1], "mask": int64 H×W, "stem": str}`` after
    ``transforms`` (a callable on that dict), if given. Mask ids index ``dataset.info.classes``;
    ``info.ignore_index`` marks unlabelled pixels.

    Raises:
        DatasetNotFoundError: ``root/dataset.yaml`` or the split's ``images``/``masks`` folder is
            missing, the split has no images, or an image has no mask; the message names the path.
        UserError: (on reading a sample) a mask holds an id outside ``info.classes`` that is not the
            ignore id; the message names the mask file and the id.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transforms: Callable[[dict], dict] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"dataset folder {self.root} does not exist")
        self.info = DatasetInfo.from_yaml(self.root / "dataset.yaml")
        self.files = self._find_files()  # [(image path, mask path)], sorted by stem

    def _find_files(self) -> list[tuple[Path, Path]]:
        image_dir = self.root / self.split / "images"
        mask_dir = self.root / self.split / "masks"
        for folder in (self.root / self.split, image_dir, mask_dir):
            if not folder.is_dir():
                raise DatasetNotFoundError(
                    f"missing folder {folder}: split {self.split!r} needs {image_dir}/<stem>.png|jpg|tif "
                    f"and {mask_dir}/<stem>.png"
                )
        images = sorted(
            (
                p
                for p in image_dir.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            ),
            key=lambda p: p.name,
        )
        if not images:
            raise DatasetNotFoundError(f"no images in {image_dir} (expected <stem>.png, .jpg or .tif)")
        stems: dict[str, Path] = {}
        for image in images:
            if image.stem in stems:
                raise UserError(
                    f"two images share the stem {image.stem!r}: {stems[image.stem].name}, {image.name}"
                )
            stems[image.stem] = image
        files = []
        for stem, image in stems.items():
            mask = mask_dir / f"{stem}.png"
            if not mask.is_file():
                raise DatasetNotFoundError(f"image {image} has no mask: expected {mask}")
            files.append((image, mask))
        return files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        image_path, mask_path = self.files[index]
        image = read_image(image_path)
        mask = read_mask(mask_path)
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            raise UserError(
                f"{image_path} is {image.shape[-1]}×{image.shape[-2]} px but its mask {mask_path} is "
                f"{mask.shape[-1]}×{mask.shape[-2]} px"
            )
        check_mask_ids(mask, len(self.info.classes), self.info.ignore_index, mask_path)
        sample: dict[str, torch.Tensor | str] = {"image": image, "mask": mask, "stem": image_path.stem}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample
