"""Segmentation of images and GeoTIFFs of any size: the ``aeroseg predict`` command and its Python API."""

from aeroseg.prediction.api import PredictionResult, predict

__all__ = ["PredictionResult", "predict"]
