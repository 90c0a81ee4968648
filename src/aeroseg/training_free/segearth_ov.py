"""SegEarth-OV as its official code runs it (preset ``segearth-ov``; Li et al., CVPR 2025, arXiv 2410.01768,
github.com/likyoo/SegEarth-OV ``segearth_segmentor.py`` with ``configs/base_config.py``).

    image → resized (longer side 448, aspect kept) → CLIP-normalised → crops 224, stride 112 →
      per crop: CLIP ViT-B/16 whose last block is Σ softmax(q·qᵀ, k·kᵀ, v·vᵀ)·v without residual or FFN →
      patch features upsampled ×16 by SimFeatUp, guided by the crop → L2-normalised → cosine with the
      80-template class embeddings + λ·cosine([CLS], class) (λ = -0.3) → crop logits averaged where crops
      overlap → bilinear to the input size → softmax(50·logits) over the prompts → background threshold

The SimFeatUp upsampling is linear per channel: per crop it is a matrix A (c²×hw) that :meth:`SegEarthOV.encode`
computes once (the steps applied to the hw unit grids) with the per-pixel norms of the upsampled features;
:meth:`SegEarthOV.segment` then scores the T classes at the grid and upsamples them by one product with A:
the same numbers, and a new class list reuses the image's encoding.
Differences from the official run: float32 instead of float16; the resize is ``F.interpolate`` on floats,
not OpenCV on uint8; crops smaller than 224 (inputs under 224 after the resize) resize CLIP's position
embeddings as transformers does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from aeroseg.backbones import load_clip
from aeroseg.errors import UserError
from aeroseg.segmenter import unit_images
from aeroseg.training_free.dense_clip import TrainingFreeClip
from aeroseg.training_free.model import PROBABILITY_EPS, background_probabilities
from aeroseg.training_free.segearth_config import SegEarthOVConfig
from aeroseg.training_free.simfeatup import SimFeatUp, load_simfeatup
from aeroseg.windows import crop_boxes


@dataclass
class SegEarthOVFeatures:
    """What :meth:`SegEarthOV.encode` computes once per image batch, per crop k of the resized input.

    patches: B×K×C×h×w raw patch features; cls: B×K×C unit [CLS] embeddings; crop_size: the (padded) crop
    side c; norms: B×K×1×c×c norms of the upsampled features and basis: B×K×c²×hw, per crop SimFeatUp's
    four steps as the matrix A they are (steps(f) = A·f per channel; both None without SimFeatUp); boxes: K
    crop boxes (y1, y2, x1, x2); pad: (left, right, top, bottom); resized: the CLIP input size; image_size: (H, W).
    """

    patches: torch.Tensor
    cls: torch.Tensor
    crop_size: tuple[int, int]
    norms: torch.Tensor | None
    basis: torch.Tensor | None
    boxes: list[tuple[int, int, int, int]]
    pad: tuple[int, int, int, int]
    resized: tuple[int, int]
    image_size: tuple[int, int]


class SegEarthOV(nn.Module):
    """SegEarth-OV; ``model(images, classes)`` → logits B×T×H×W whose sigmoid is the softmax probability of
    each prompt among ``classes`` (the protocol of :class:`aeroseg.training_free.TrainingFreeSegmenter`).
    Nothing in it has ``requires_grad``."""

    window = 512  # the window side predict runs it at
    value_range = (0.0, 1.0)  # float images in this range (uint8 is scaled where the model takes it)

    def __init__(self, config: SegEarthOVConfig, clip: TrainingFreeClip, upsampler: SimFeatUp | None) -> None:
        super().__init__()
        self.config = config
        self.backbone = clip
        self.upsampler = upsampler
        self.patch = clip.clip.config.vision_config.patch_size
        self._text_cache: tuple[Any, torch.Tensor] | None = None
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """images: B×3×H×W in [0, 1]; classes: T prompts → logits B×T×H×W."""
        return self.segment(self.encode(images), classes)

    def encode(self, images: torch.Tensor) -> SegEarthOVFeatures:
        """Resize, normalise, crop; CLIP features of every crop and the norms of their upsampled version."""
        images = unit_images(images)  # uint8 → [0, 1]
        cfg, (H, W) = self.config, images.shape[-2:]
        scale = cfg.image_size / max(H, W) if cfg.image_size else 1.0
        resized = (int(H * scale + 0.5), int(W * scale + 0.5))
        x = F.interpolate(images.float(), size=resized, mode="bilinear", align_corners=False)
        x = (x - self.backbone.mean) / self.backbone.std
        boxes = crop_boxes(*resized, cfg.slide_crop, cfg.slide_stride)
        crop_h, crop_w = boxes[0][1] - boxes[0][0], boxes[0][3] - boxes[0][2]
        pad = _pad(crop_h, crop_w, self.patch)
        crops = torch.stack([F.pad(x[:, :, y1:y2, x1:x2], pad) for y1, y2, x1, x2 in boxes], 1)
        B, K = crops.shape[:2]
        tokens = self.backbone._dense_tokens(crops.flatten(0, 1))[0]  # (B*K, 1+h*w, C)
        h, w = crops.shape[-2] // self.patch, crops.shape[-1] // self.patch
        patches = tokens[:, 1:].transpose(1, 2).reshape(B, K, -1, h, w)
        cls = F.normalize(tokens[:, 0], dim=-1).view(B, K, -1)
        norms, basis = None, None
        if self.upsampler is not None:  # per crop: the upsampling as a matrix, and the upsampled norms
            up, basis_list, norm_list = self.upsampler, [], []
            weight, bias = up.fixup.weight[:, :, 0, 0], up.fixup.bias  # (C, C), (C,)
            units = torch.eye(h * w, device=x.device).view(1, h * w, h, w).expand(B, -1, -1, -1)
            for k in range(K):
                # the four steps are linear per channel: steps(f) = A·f, A (c²×hw) = the steps of the unit grids
                up_units = up.upsample(units, up.kernels(crops[:, k], (h, w)))  # (B, hw, c, c) channels last
                basis_list.append(up_units.permute(0, 2, 3, 1).reshape(B, -1, h * w))  # (B, c², hw)
                # SimFeatUp(f) = steps(f) + 0.1 (W steps(f) + b) = A·(f + 0.1 W f) + 0.1 b
                f = patches[:, k].flatten(2).transpose(1, 2)  # (B, hw, C)
                y = basis_list[-1] @ (f + 0.1 * f @ weight.T) + 0.1 * bias  # (B, c², C)
                norm_list.append(y.norm(dim=-1).view(B, 1, *crops.shape[-2:]))
            basis, norms = (
                torch.stack(basis_list, 1),
                torch.stack(norm_list, 1),
            )  # (B, K, c², hw), (B, K, 1, c, c)
        crop_size = (crops.shape[-2], crops.shape[-1])
        return SegEarthOVFeatures(patches, cls, crop_size, norms, basis, boxes, pad, resized, (H, W))

    def segment(self, feats: SegEarthOVFeatures, classes: Sequence[str]) -> torch.Tensor:
        """Logits B×T×H×W for ``classes`` from features computed once by :meth:`encode`."""
        text = self.encode_text(classes).float()  # (T, C)
        B, K = feats.patches.shape[:2]
        preds = feats.patches.new_zeros(B, len(classes), *feats.resized)
        count = feats.patches.new_zeros(1, 1, *feats.resized)
        left, right, top, bottom = feats.pad
        for k, (y1, y2, x1, x2) in enumerate(feats.boxes):
            logits = self._crop_logits(feats, k, text)  # (B, T, c, c), padded crop
            logits = logits[:, :, top : logits.shape[-2] - bottom, left : logits.shape[-1] - right]
            preds[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
        preds = F.interpolate(preds / count, size=feats.image_size, mode="bilinear", align_corners=False)
        probs = (self.config.logit_scale * preds).softmax(1)
        probs = background_probabilities(
            probs, classes, self.config.background_names, self.config.background_threshold
        )
        return torch.logit(probs, eps=PROBABILITY_EPS)

    def _crop_logits(self, feats: SegEarthOVFeatures, k: int, text: torch.Tensor) -> torch.Tensor:
        """cos(upsampled patch, class) + λ cos([CLS], class) of crop k → B×T×c×c."""
        patches = feats.patches[:, k]
        cls_scores = torch.einsum("bc,tc->bt", feats.cls[:, k], text)[:, :, None, None]
        if self.upsampler is None or feats.norms is None:
            scores = torch.einsum("bchw,tc->bthw", F.normalize(patches, dim=1), text)
            scores = F.interpolate(scores, size=feats.crop_size, mode="bilinear", align_corners=False)
        else:
            # SimFeatUp(f)·t = A·(f·t') + 0.1 b·t with t' = t + 0.1 Wᵀt (W, b: its final 1×1 conv)
            fixup = self.upsampler.fixup
            projected = text + 0.1 * text @ fixup.weight[:, :, 0, 0]  # (T, C)
            x = feats.basis[:, k] @ (patches.flatten(2).transpose(1, 2) @ projected.T)  # (B, c², T)
            x = x.transpose(1, 2).reshape(*x.shape[:1], -1, *feats.crop_size)  # (B, T, c, c)
            scores = (x + 0.1 * (text @ fixup.bias)[None, :, None, None]) / feats.norms[:, k]
        return scores + self.config.cls_token_lambda * cls_scores

    def encode_text(self, classes: Sequence[str]) -> torch.Tensor:
        """T×C prompt-ensembled class embeddings (normalised per template, averaged, re-normalised)."""
        if not classes:
            raise ValueError("the class list is empty")
        clip = self.backbone.clip
        key = (tuple(classes), clip.text_projection.weight.device, clip.dtype)
        if self._text_cache is None or self._text_cache[0] != key:
            text = self.backbone.encode_text(classes)  # (T, P, C)
            self._text_cache = (key, F.normalize(text.mean(1), dim=-1))
        return self._text_cache[1]

    def probabilities(self, feats: SegEarthOVFeatures, classes: Sequence[str]) -> torch.Tensor:
        """Per-class probabilities B×T×H×W (float32) for ``classes``: the sigmoid of :meth:`segment`."""
        return torch.sigmoid(self.segment(feats, classes).float())

    @classmethod
    def from_config(cls, config: SegEarthOVConfig, *, pretrained: bool = True) -> SegEarthOV:
        """Load CLIP and SimFeatUp (random architectures when ``pretrained=False``)."""
        clip, tokenizer = load_clip(
            config.clip, arch=config.clip_arch, pretrained=pretrained, activation=config.clip_activation
        )
        upsampler = None
        if config.simfeatup is not None and clip.config.vision_config.patch_size != 16:
            raise UserError("SimFeatUp upsamples ×16: it needs a patch-16 CLIP (or simfeatup=None)")
        if config.simfeatup is not None:
            dim = clip.config.projection_dim
            upsampler = (
                load_simfeatup(config.simfeatup, dim) if pretrained else SimFeatUp(dim, config.simfeatup_kind)
            )
        return cls.assemble(config, clip, tokenizer, upsampler)

    @classmethod
    def assemble(
        cls, config: SegEarthOVConfig, clip: CLIPModel, tokenizer: CLIPTokenizer, upsampler: SimFeatUp | None
    ) -> SegEarthOV:
        """The model from its parts: CLIP, its tokenizer and SimFeatUp (or None)."""
        backbone = TrainingFreeClip(
            clip,
            tokenizer,
            image_size=config.slide_crop,
            crop=0,
            stride=config.slide_crop,
            rotations=(0,),
            templates=config.prompt_templates,
            attention="qq+kk+vv",
            residual=False,
            cls_bias=0.0,
        )
        return cls(config, backbone, upsampler)


def _pad(h: int, w: int, patch: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that makes an h×w crop a multiple of the patch, centred."""
    lr, tb = -w % patch, -h % patch
    return lr // 2, lr - lr // 2, tb // 2, tb - tb // 2
