"""The open-vocabulary classifier: CLIP text embeddings of the class names and a learned "no object".

SCAN ``scan/modeling/clip_adapter/adapter.py`` (``ClipAdapter`` / ``MaskFormerClipAdapter``) and
``text_template.py`` (``PredefinedPromptExtractor``): each class is the mean of its L2-normalised prompt
embeddings (one per template), normalised again; the learned ``non_object_embedding`` is normalised and
appended; logits are ``temperature`` (100) times the cosine of an L2-normalised embedding with each. CLIP's
text tower is frozen (the official keeps a per-word cache of its embeddings, in training too).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTokenizer
from transformers.models.clip.modeling_clip import CLIPTextModel

from aeroseg.convert.tokenizer import clean_text


class TextClassifier(nn.Module):
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
        super().__init__()
        self.text_model = text_model
        self.text_projection = text_projection
        self.tokenizer = tokenizer
        self.templates = tuple(templates)
        self.temperature = temperature
        width = text_model.config.hidden_size
        self.non_object_embedding = nn.Parameter(torch.randn(1, text_projection.out_features) * width**-0.5)
        self._cache: tuple[tuple, torch.Tensor] | None = None

    @torch.no_grad()
    def encode_text(self, classes: Sequence[str]) -> torch.Tensor:
        """T×D: per class, the normalised mean of its normalised template embeddings."""
        prompts = [clean_text(t.format(name)) for t in self.templates for name in classes]
        max_length = self.text_model.config.max_position_embeddings
        batch = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        device = self.text_projection.weight.device
        out = self.text_model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        )
        text = F.normalize(self.text_projection(out.pooler_output), dim=-1)  # (P·T)×D
        return F.normalize(text.view(len(self.templates), len(classes), -1).mean(0), dim=-1)

    def text_embeddings(self, classes: Sequence[str]) -> torch.Tensor:
        """:meth:`encode_text`, cached per class list; the key holds the device, dtype, autocast dtype and
        inference mode (a tensor made in inference mode cannot enter autograd)."""
        if not classes:
            raise ValueError("the class list is empty")
        device = self.text_projection.weight.device
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        key = (
            tuple(classes),
            device,
            self.text_projection.weight.dtype,
            autocast,
            torch.is_inference_mode_enabled(),
        )
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.encode_text(classes))
        return self._cache[1]

    def forward(self, classes: Sequence[str]) -> torch.Tensor:
        """(T+1)×D class weights, L2-normalised, "no object" last."""
        text = self.text_embeddings(classes)
        return torch.cat([text, F.normalize(self.non_object_embedding, dim=-1).to(text.dtype)])

    def logits(self, embeddings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """embeddings ...×D (any norm), weights (T+1)×D -> ...×(T+1): temperature · cosine."""
        return self.temperature * F.normalize(embeddings, dim=-1) @ weights.T.to(embeddings.dtype)
