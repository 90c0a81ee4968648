"""The open-vocabulary classifier: CLIP text embeddings of the class names and a learned "no object".

SCAN ``scan/modeling/clip_adapter/adapter.py`` (``MaskFormerClipAdapter``): the class embeddings of
:class:`~aeroseg.mask_classification.TemplateTextEmbeddings`, the learned ``non_object_embedding`` normalised
and appended; logits are ``temperature`` (100) times the cosine of an L2-normalised embedding with each.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTokenizer
from transformers.models.clip.modeling_clip import CLIPTextModel

from aeroseg.mask_classification.text_embeddings import TemplateTextEmbeddings


class TextClassifier(TemplateTextEmbeddings):
    """Class weights (T+1)×D for T class names, "no object" last, and logits against them.

    Args:
        text_model: CLIP's text transformer; text_projection: its projection; tokenizer: the CLIP tokenizer;
        templates: prompt templates ("{}" is the class name); temperature: the logits' scale.
    """

    def __init__(
        self,
        text_model: CLIPTextModel,
        text_projection: nn.Linear,
        tokenizer: CLIPTokenizer,
        templates: Sequence[str],
        temperature: float,
    ) -> None:
        super().__init__(text_model, text_projection, tokenizer, templates)
        self.temperature = temperature
        width = text_model.config.hidden_size
        self.non_object_embedding = nn.Parameter(torch.randn(1, text_projection.out_features) * width**-0.5)

    def forward(self, classes: Sequence[str]) -> torch.Tensor:
        """(T+1)×D class weights, L2-normalised, "no object" last."""
        text = self.text_embeddings(classes)
        return torch.cat([text, F.normalize(self.non_object_embedding, dim=-1).to(text.dtype)])

    def logits(self, embeddings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """embeddings ...×D (any norm), weights (T+1)×D -> ...×(T+1): temperature · cosine."""
        return self.temperature * F.normalize(embeddings, dim=-1) @ weights.T.to(embeddings.dtype)
