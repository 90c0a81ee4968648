"""Datasets in one canonical layout, their training transforms, and ``aeroseg prepare``."""

from aeroseg.data.dataset import SegmentationDataset, read_image, read_mask
from aeroseg.data.info import DatasetInfo

__all__ = ["DatasetInfo", "SegmentationDataset", "read_image", "read_mask"]
