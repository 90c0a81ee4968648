"""The open-vocabulary classifier: CLIP text embeddings of the class names and a learned background.

SAN ``san/model/clip_utils/classifier.py``, ``LearnableBgOvClassifier``: the class embeddings of
:class:`~aeroseg.mask_classification.TemplateTextEmbeddings`, a learned "no object" embedding appended and
normalised; logits are ``exp(logit_scale)`` times the cosine with the mask embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTokenizer
from transformers.models.clip.modeling_clip import CLIPTextModel

from aeroseg.mask_classification.text_embeddings import TemplateTextEmbeddings


class OpenVocabularyClassifier(TemplateTextEmbeddings):
    """Class weights (T+1)×D for T class names; the last row is the learned background.

    Args:
        text_model: CLIP's text model; text_projection: its projection; logit_scale: CLIP's (a log).
        tokenizer: the CLIP tokenizer; templates: prompt templates, "{}" is the class name.
    """

    def __init__(
        self,
        text_model: CLIPTextModel,
        text_projection: nn.Linear,
        logit_scale: nn.Parameter,
        tokenizer: CLIPTokenizer,
        templates: Sequence[str],
    ) -> None:
        super().__init__(text_model, text_projection, tokenizer, templates)
        self.logit_scale = logit_scale
        dim = text_projection.out_features
        self.bg_embed = nn.Parameter(torch.randn(1, dim) * dim**-0.5)

    def forward(self, classes: Sequence[str]) -> torch.Tensor:
        """(T+1)×D scaled class weights, the background last."""
        text = self.text_embeddings(classes)
        weights = F.normalize(torch.cat([text, self.bg_embed.to(text.dtype)]), dim=-1)
        return self.logit_scale.exp() * weights
