"""Class embeddings from prompt templates, as SAN and SCAN compute them: each class is the mean of its
L2-normalised prompt embeddings (one per template), normalised again (SAN
``san/model/clip_utils/classifier.py`` ``PredefinedOvClassifier``; SCAN ``scan/modeling/clip_adapter/adapter.py``
``ClipAdapter`` with ``text_template.py`` ``PredefinedPromptExtractor``). CLIP's text tower is frozen: the
embeddings are computed without gradients and cached per class list (the official keep a per-word cache)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTokenizer
from transformers.models.clip.modeling_clip import CLIPTextModel

from aeroseg.convert.tokenizer import clean_text


class TemplateTextEmbeddings(nn.Module):
    """T×D class embeddings of T class names (the base of the families' classifiers).

    Args:
        text_model: CLIP's text transformer; text_projection: its projection; tokenizer: the CLIP tokenizer;
        templates: prompt templates, "{}" is the class name.
    """

    def __init__(
        self,
        text_model: CLIPTextModel,
        text_projection: nn.Linear,
        tokenizer: CLIPTokenizer,
        templates: Sequence[str],
    ) -> None:
        super().__init__()
        self.text_model = text_model
        self.text_projection = text_projection
        self.tokenizer = tokenizer
        self.templates = tuple(templates)
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
        inference = torch.is_inference_mode_enabled()
        key = (tuple(classes), device, self.text_projection.weight.dtype, autocast, inference)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.encode_text(classes))
        return self._cache[1]

    def train(self, mode: bool = True) -> TemplateTextEmbeddings:
        super().train(mode)
        self._cache = None
        return self
