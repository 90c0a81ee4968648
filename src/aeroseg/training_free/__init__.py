"""Training-free open-vocabulary segmentation from public CLIP / SAM weights (preset ``training-free``)."""

from aeroseg.training_free.config import TrainingFreeConfig, training_free
from aeroseg.training_free.model import TrainingFreeFeatures, TrainingFreeSegmenter, build_training_free

__all__ = [
    "TrainingFreeConfig",
    "TrainingFreeFeatures",
    "TrainingFreeSegmenter",
    "build_training_free",
    "training_free",
]
