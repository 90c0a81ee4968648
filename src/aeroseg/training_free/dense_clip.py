"""Training-free dense CLIP features: the last block without query-key mixing, sliding crops and the
global [CLS] bias removed (SegEarth-OV, arXiv 2410.01768, Sec. 3; SCLIP and ClearCLIP before it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from aeroseg.modeling.vision_language_backbone import VisionLanguageBackbone
from aeroseg.windows import stride_starts


class TrainingFreeClip(VisionLanguageBackbone):
    """CLIP image and text encoders whose patch tokens can be compared with text without training.

    Args:
        clip, tokenizer, image_size, rotations, templates: as :class:`VisionLanguageBackbone`.
        crop: side of the crops CLIP runs on (SegEarth-OV slide inference); 0 = one pass over the input.
        stride: step between crops, in pixels of the ``image_size`` input.
        attention: which self-similarities replace the last block's query-key attention (see
            :class:`~aeroseg.training_free.config.TrainingFreeConfig` for the source of each).
        residual: keep the last block's residual connection and FFN (``False``: ClearCLIP).
        cls_bias: weight of the [CLS] embedding subtracted from every patch embedding (SegEarth-OV).
    """

    def __init__(
        self,
        clip: CLIPModel,
        tokenizer: CLIPTokenizer,
        *,
        image_size: int,
        crop: int,
        stride: int,
        rotations: Sequence[int],
        templates: Sequence[str],
        attention: str,
        residual: bool,
        cls_bias: float,
    ) -> None:
        super().__init__(clip, tokenizer, image_size=image_size, rotations=rotations, templates=templates)
        patch = clip.config.vision_config.patch_size
        self.crop = crop or image_size
        if self.crop > image_size:
            raise ValueError(f"clip_crop {crop} is larger than clip_image_size {image_size}")
        if self.crop % patch or stride % patch:
            raise ValueError(
                f"clip_crop {crop} and clip_stride {stride} must be multiples of the patch {patch}"
            )
        self.stride = stride
        self.attention = attention
        self.residual = residual
        self.cls_bias = cls_bias
        self.requires_grad_(False)

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        """Dense features whose dot product with a normalised text embedding is the class score.

        Args:
            images: B×3×H×W in [0, 1] (any size; resized to ``image_size``).
        Returns:
            B×C×h×w: per crop ``normalize(patch) - cls_bias * normalize(cls)``, averaged over the crops
            that cover a cell and over the rotations (rotated back), so that ``features · text`` is
            SegEarth-OV's ``cos(patch, text) + λ cos(cls, text)`` with λ = -cls_bias.
        """
        x = F.interpolate(images, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        B, R, h = x.shape[0], len(self.rotations), self.grid_size
        x = torch.cat([torch.rot90(x, k=r // 90, dims=(2, 3)) for r in self.rotations])  # (R*B, 3, S, S)
        starts = stride_starts(self.image_size, self.crop, self.stride)
        crops = torch.stack(
            [x[:, :, y : y + self.crop, s : s + self.crop] for y in starts for s in starts], dim=1
        ).flatten(0, 1)  # (R*B*K, 3, c, c)
        tokens = self._dense_tokens(crops)[0]  # (R*B*K, 1+g*g, C)
        feats = F.normalize(tokens[:, 1:], dim=-1) - self.cls_bias * F.normalize(tokens[:, :1], dim=-1)
        g, patch = self.crop // self.clip.config.vision_config.patch_size, self.image_size // h
        feats = feats.transpose(1, 2).reshape(R * B, len(starts) ** 2, -1, g, g)  # (R*B, K, C, g, g)
        grid = feats.new_zeros(R * B, feats.shape[2], h, h)
        count = feats.new_zeros(1, 1, h, h)
        k = 0
        for y in starts:
            for s in starts:
                grid[:, :, y // patch : y // patch + g, s // patch : s // patch + g] += feats[:, k]
                count[:, :, y // patch : y // patch + g, s // patch : s // patch + g] += 1
                k += 1
        grid = (grid / count).view(R, B, -1, h, h)  # (R, B, C, h, w)
        return torch.stack(
            [torch.rot90(grid[i], k=-(r // 90), dims=(2, 3)) for i, r in enumerate(self.rotations)]
        ).mean(0)  # (B, C, h, w)

    def _last_block(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The last block with self-self attention (sum of the softmaxes of q·qᵀ, k·kᵀ, v·vᵀ as chosen)."""
        attn = layer.self_attn
        N, L, D = x.shape
        y = layer.layer_norm1(x)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(N, L, attn.num_heads, attn.head_dim).transpose(1, 2)  # (N, heads, L, d)

        q, k, v = heads(attn.q_proj(y)), heads(attn.k_proj(y)), heads(attn.v_proj(y))
        if self.attention == "identity":
            out = v  # MaskCLIP: every token keeps its own value
        else:
            sources = {"qq": q, "kk": k, "vv": v}
            parts = [sources[name] for name in self.attention.split("+")]
            # the sum, as SCLIP and SegEarth-OV: the output projection's bias makes a mean differ from it
            weights = torch.stack([(a @ a.transpose(-1, -2) * attn.scale).softmax(-1) for a in parts]).sum(0)
            out = weights @ v  # (N, heads, L, d)
        out = attn.out_proj(out.transpose(1, 2).reshape(N, L, D))
        if not self.residual:
            return out  # ClearCLIP: no residual, no FFN
        x = x + out
        return x + layer.mlp(layer.layer_norm2(x))
