"""The base of the tests' stand-in models: what every model family offers (:class:`aeroseg.Segmenter`), with
``segment`` returning logits whose sigmoid is the probability, as the AerOSeg family's."""

from __future__ import annotations

import torch
from torch import nn


class LogitStandIn(nn.Module):
    window = 512
    value_range = (0.0, 1.0)

    def probabilities(self, feats, classes):
        return torch.sigmoid(self.segment(feats, list(classes)).float())
