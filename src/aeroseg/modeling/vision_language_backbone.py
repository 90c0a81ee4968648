"""Vision-language backbone (paper Sec. 3.1, docs/model.md §2): CLIP dense image embeddings over rotations, and
prompt-ensembled text embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from aeroseg.convert.tokenizer import clean_text
from aeroseg.precision import fp32

_normalize = fp32(F.normalize)  # the cosine of Eq. 3 is taken in fp32 (docs/model.md §12)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class VisionLanguageBackbone(nn.Module):
    """CLIP image and text encoders adapted to dense prediction.

    Args:
        clip: a ``transformers.CLIPModel``.
        tokenizer: the matching ``CLIPTokenizer``.
        image_size: side of the square CLIP input; the grid is ``image_size // patch_size``.
        rotations: angles in degrees (multiples of 90); the image is encoded once per angle in one batch.
        templates: prompt templates, each with ``{}`` for the class name.
        dense_last_block: run the last block without attention mixing (CAT-Seg), so that every token
            carries its own position's content; ``False`` reproduces CLIP's own last block.
        guidance_layers: 1-based vision blocks whose token grids are returned as intermediate features
            (the Baseline's decoder guidance); empty for none.
    """

    def __init__(
        self,
        clip: CLIPModel,
        tokenizer: CLIPTokenizer,
        *,
        image_size: int,
        rotations: Sequence[int],
        templates: Sequence[str],
        dense_last_block: bool = True,
        guidance_layers: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.rotations = tuple(rotations)
        self.templates = tuple(templates)
        self.dense_last_block = dense_last_block
        self.guidance_layers = tuple(guidance_layers)
        vision = clip.config.vision_config
        if image_size % vision.patch_size:
            raise ValueError(
                f"clip_image_size {image_size} is not a multiple of the patch size {vision.patch_size}"
            )
        if any(not 1 <= i <= vision.num_hidden_layers for i in self.guidance_layers):
            raise ValueError(
                f"CLIP guidance layers {self.guidance_layers} outside 1..{vision.num_hidden_layers}"
            )
        self.grid_size = image_size // vision.patch_size
        self.embed_dim = clip.config.projection_dim
        self.hidden_size = vision.hidden_size
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    # ---------------------------------------------------------------------------------------------- image
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Dense image embeddings over all rotations.

        Args:
            images: B×3×H×W in [0, 1] (any size; resized to the CLIP input).
        Returns:
            embeddings: B×R×C×h×w, L2-normalised along C and rotated back to the input orientation (Eq. 1).
            clip_guidance: with guidance layers, CAT-Seg's CLIP guidance of the unrotated image: the raw (not
                normalised) dense embedding B×C×h×w, then each guidance layer's B×D×h×w token grid (D = width);
                empty without guidance layers.
        """
        x = F.interpolate(images, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        B = x.shape[0]
        x = torch.cat([torch.rot90(x, k=r // 90, dims=(2, 3)) for r in self.rotations])  # (R*B, 3, S, S)
        tokens, intermediate = self._dense_tokens(x)  # (R*B, 1+h*w, C), [(R*B, 1+h*w, D)]
        if not self.guidance_layers:
            return _normalize(self._grids(tokens, B), dim=2), []
        raw = self._grids(tokens, B)  # (B, R, C, h, w)
        unrotated = self.rotations.index(0) if 0 in self.rotations else 0
        guidance = [raw[:, unrotated], *(self._grids(t, B)[:, unrotated] for t in intermediate)]
        return _normalize(raw, dim=2), guidance

    def _grids(self, tokens: torch.Tensor, B: int) -> torch.Tensor:
        """(R·B, 1+h·w, C) tokens of the rotated copies → B×R×C×h×w grids rotated back (CLS dropped)."""
        h = w = self.grid_size
        R = len(self.rotations)
        grid = tokens[:, 1:].transpose(1, 2).reshape(R, B, -1, h, w)  # (R, B, C, h, w)
        return torch.stack(
            [torch.rot90(grid[i], k=-(r // 90), dims=(2, 3)) for i, r in enumerate(self.rotations)], 1
        )

    def _dense_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the CLIP vision tower on N×3×S×S pixels → (N, 1+h·w, C) projected tokens, intermediates."""
        vision = self.clip.vision_model
        x = vision.embeddings(pixels, interpolate_pos_encoding=True)  # bicubic position embedding resize
        x = vision.pre_layrnorm(x)
        layers = vision.encoder.layers
        intermediate = []
        for i, layer in enumerate(layers[:-1], start=1):
            x = layer(x, None)
            if i in self.guidance_layers:
                intermediate.append(x)
        x = self._last_block(layers[-1], x)
        if len(layers) in self.guidance_layers:
            intermediate.append(x)
        x = vision.post_layernorm(x)
        return self.clip.visual_projection(x), intermediate

    def _last_block(self, last: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The last transformer block: CAT-Seg's dense version (value path only, no token mixing) or CLIP's."""
        if not self.dense_last_block:
            return last(x, None)
        v = last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(x)))
        v = v + x[:, :1]  # CLS token of the block input, broadcast to every position
        return v + last.mlp(last.layer_norm2(v))

    # ----------------------------------------------------------------------------------------------- text
    def encode_text(self, classes: Sequence[str]) -> torch.Tensor:
        """Text embeddings of every class in every template (Eq. 2), one batch of T·P.

        Returns:
            T×P×C, L2-normalised along C.
        """
        prompts = [clean_text(template.format(name)) for name in classes for template in self.templates]
        max_length = self.clip.config.text_config.max_position_embeddings
        batch = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        device = self.clip.text_projection.weight.device
        out = self.clip.text_model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        )
        text = self.clip.text_projection(out.pooler_output)  # (T*P, C)
        return _normalize(text.view(len(classes), len(self.templates), -1), dim=-1)
