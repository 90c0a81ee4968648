"""Training of AerOSeg models: ``aeroseg train`` (see docs/training.md)."""

from aeroseg.training.train_config import TrainConfig

__all__ = ["TrainConfig"]
