"""SED's text side: the CLIP text tower over the prompt ensemble (``SEDPredictor.class_embeddings`` of
``sed/modeling/transformer/sed_predictor.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from aeroseg.convert.tokenizer import clean_text

SYNONYM_SEPARATOR = ", "
"""A class name holding ``", "`` lists synonyms: SED embeds each and averages them per template."""


class TextEncoder(nn.Module):
    """CLIP text embeddings of every class in every template.

    Args:
        clip: the text tower with its projection (``transformers.CLIPTextModelWithProjection``).
        tokenizer: the CLIP tokenizer (open_clip's, 77 tokens).
        templates: P prompt templates, each with ``{}`` for the class name.
    """

    def __init__(
        self, clip: CLIPTextModelWithProjection, tokenizer: CLIPTokenizer, *, templates: Sequence[str]
    ) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.templates = tuple(templates)

    def forward(self, classes: Sequence[str]) -> torch.Tensor:
        """T class names → T×P×C embeddings, L2-normalised along C.

        A name ``"a, b"`` is embedded as ``a`` and as ``b`` in every template; the two unit embeddings are
        averaged and normalised again, as SED does.
        """
        names = [name.split(SYNONYM_SEPARATOR) for name in classes]
        prompts = [clean_text(t.format(s)) for synonyms in names for t in self.templates for s in synonyms]
        batch = self.tokenizer(
            prompts,
            padding=True,
            truncation=True,
            max_length=self.clip.config.max_position_embeddings,
            return_tensors="pt",
        )
        device = self.clip.text_projection.weight.device
        out = self.clip(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        )
        embeds = F.normalize(out.text_embeds, dim=-1)  # (sum of P·S_t, C)
        per_class = []
        for chunk, synonyms in zip(
            embeds.split([len(self.templates) * len(s) for s in names]), names, strict=True
        ):
            chunk = chunk.view(len(self.templates), len(synonyms), -1).mean(dim=1)  # (P, C)
            per_class.append(F.normalize(chunk, dim=-1) if len(synonyms) > 1 else chunk)
        return torch.stack(per_class)  # (T, P, C)
