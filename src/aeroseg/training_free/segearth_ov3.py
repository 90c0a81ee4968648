"""SegEarth-OV3 on ``transformers``' SAM 3 (preset ``segearth-ov3``; Li et al. 2025, arXiv 2512.08730,
github.com/earth-insights/SegEarth-OV-3 ``segearthov3_segmentor.py``).

    image → [crops] → SAM 3 image encoder, once per crop → every prompt (one class or synonym), all in one
      batched pass: SAM 3's DETR encoder, decoder and heads on the cached image features →
      instance head: max over the instances kept (object score × presence > confidence_threshold) of
        sigmoid(mask) × object score; semantic head: sigmoid(semantic map); fused by the element-wise max →
      × presence score → crops averaged where they overlap → background where no class reaches the
      threshold

SAM 3 (facebook/sam3) is gated on the Hugging Face hub under the SAM License: accept it on the model page
and log in (``hf auth login``) before the first download, or pass a local transformers directory.
The official code reads ``object_score``, ``semantic_mask_logits`` and ``presence_score`` from a modified
``Sam3Processor`` that its repository does not include; here they are sigmoid(pred_logits), sigmoid of the
upsampled ``semantic_seg`` and sigmoid(presence_logits), and instances are kept as facebook's processor keeps
them (sigmoid(pred_logits) × presence > confidence_threshold). float32 instead of the official bfloat16.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTokenizer, Sam3Model
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from aeroseg.backbones import load_sam3
from aeroseg.segmenter import unit_images
from aeroseg.training_free.model import PROBABILITY_EPS
from aeroseg.training_free.segearth_config import SegEarthOV3Config
from aeroseg.windows import crop_boxes

SAM3_MEAN = SAM3_STD = 0.5  # Sam3Processor: Normalize(mean=0.5, std=0.5) of [0, 1] pixels
TEXT_LENGTH = 32  # Sam3Processor pads every prompt to 32 tokens
PROMPTS_PER_PASS = 16  # prompts through the detector in one batched pass (bounds its activations)


@dataclass
class SegEarthOV3Features:
    """SAM 3's image encoding of every crop, computed once by :meth:`SegEarthOV3.encode`.

    vision: the ``Sam3VisionEncoderOutput`` of the B·K crops (image-major); boxes: K crop boxes
    (y1, y2, x1, x2) in input pixels; batch: B; image_size: (H, W).
    """

    vision: Sam3VisionEncoderOutput
    boxes: list[tuple[int, int, int, int]]
    batch: int
    image_size: tuple[int, int]


def repeat_vision(vision: Sam3VisionEncoderOutput, n: int) -> Sam3VisionEncoderOutput:
    """The FPN features and position encodings the detector reads, N → n·N rows (n copies, prompt-major)."""
    return Sam3VisionEncoderOutput(
        fpn_hidden_states=tuple(x.repeat(n, *[1] * (x.dim() - 1)) for x in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(x.repeat(n, *[1] * (x.dim() - 1)) for x in vision.fpn_position_encoding),
    )


def fuse_heads(
    mask_logits: torch.Tensor,
    object_logits: torch.Tensor,
    presence_logits: torch.Tensor,
    semantic_logits: torch.Tensor,
    size: tuple[int, int],
    config: SegEarthOV3Config,
) -> torch.Tensor:
    """SegEarth-OV3's per-prompt class map from SAM 3's heads.

    Args:
        mask_logits: N×Q×h×w instance masks; object_logits: N×Q; presence_logits: N×1;
        semantic_logits: N×1×h'×w'; size: (H, W) of the crop.
    Returns:
        N×H×W scores in [0, 1].
    """
    presence = presence_logits.float().sigmoid()  # (N, 1)
    objects = object_logits.float().sigmoid()  # (N, Q)
    out = mask_logits.new_zeros(mask_logits.shape[0], *size, dtype=torch.float32)
    if config.use_transformer_decoder:
        keep = objects * presence > config.confidence_threshold  # (N, Q)
        for n in range(out.shape[0]):
            kept = keep[n].nonzero().flatten()
            if len(kept):
                masks = F.interpolate(
                    mask_logits[n, kept][None].float(), size=size, mode="bilinear"
                ).sigmoid()[0]
                out[n] = torch.maximum(out[n], (masks * objects[n, kept, None, None]).amax(0))
    if config.use_sem_seg:
        semantic = F.interpolate(semantic_logits.float(), size=size, mode="bilinear", align_corners=False)
        out = torch.maximum(out, semantic[:, 0].sigmoid())
    if config.use_presence_score:
        out = out * presence[:, :, None]
    return out


def background_floor(
    scores: torch.Tensor, classes: Sequence[str], names: Sequence[str], threshold: float
) -> torch.Tensor:
    """Official prob_thd: where no class reaches ``threshold``, the background classes get it (so the argmax
    is background there). scores: B×T×H×W → B×T×H×W."""
    background = [i for i, c in enumerate(classes) if c.casefold() in {n.casefold() for n in names}]
    if not background or threshold <= 0:
        return scores
    below = scores.amax(1, keepdim=True) < threshold  # (B, 1, H, W)
    scores = scores.clone()
    scores[:, background] = torch.where(
        below, torch.full_like(scores[:, background], threshold), scores[:, background]
    )
    return scores


class SegEarthOV3(nn.Module):
    """SegEarth-OV3; ``model(images, classes)`` → logits B×T×H×W whose sigmoid is each prompt's fused score
    (independent per class, as SAM 3's). Nothing in it has ``requires_grad``."""

    window = 512  # the window side predict runs it at
    value_range = (0.0, 1.0)  # float images in this range (uint8 is scaled where the model takes it)

    def __init__(self, config: SegEarthOV3Config, sam3: Sam3Model, tokenizer: CLIPTokenizer) -> None:
        super().__init__()
        self.config = config
        self.sam3 = sam3
        self.tokenizer = tokenizer
        self._text_cache: tuple[Any, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """images: B×3×H×W in [0, 1]; classes: T prompts → logits B×T×H×W."""
        return self.segment(self.encode(images), classes)

    def encode(self, images: torch.Tensor) -> SegEarthOV3Features:
        """Crop (official slide boxes), resize every crop to image_size², normalise, run SAM 3's encoder."""
        images = unit_images(images)  # uint8 → [0, 1]
        cfg, (H, W) = self.config, images.shape[-2:]
        slide = cfg.slide_crop > 0 and (cfg.slide_crop < H or cfg.slide_crop < W)
        boxes = crop_boxes(H, W, cfg.slide_crop, cfg.slide_stride) if slide else [(0, H, 0, W)]
        crops = torch.stack([images[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes], 1).flatten(0, 1)
        side = cfg.image_size or self.sam3.config.vision_config.image_size
        size = (side, side)
        x = F.interpolate(crops.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        dtype = next(self.sam3.parameters()).dtype
        vision = self.sam3.get_vision_features(pixel_values=((x - SAM3_MEAN) / SAM3_STD).to(dtype))
        return SegEarthOV3Features(vision, boxes, images.shape[0], (H, W))

    def segment(self, feats: SegEarthOV3Features, classes: Sequence[str]) -> torch.Tensor:
        """Logits B×T×H×W for ``classes`` from the image encoding computed once by :meth:`encode`."""
        text, mask = self.encode_text(classes)  # (T, L, D), (T, L)
        B, K = feats.batch, len(feats.boxes)
        y1, y2, x1, x2 = feats.boxes[0]
        crop = (y2 - y1, x2 - x1)
        N, T = B * K, len(classes)
        maps = []
        for t in range(0, T, PROMPTS_PER_PASS):  # the prompts together, each on every crop: (n·N) rows
            n = min(PROMPTS_PER_PASS, T - t)
            out = self.sam3(
                vision_embeds=repeat_vision(feats.vision, n),
                text_embeds=BaseModelOutputWithPooling(pooler_output=text[t : t + n].repeat_interleave(N, 0)),
                attention_mask=mask[t : t + n].repeat_interleave(N, 0),
            )
            maps.append(
                fuse_heads(
                    out.pred_masks, out.pred_logits, out.presence_logits, out.semantic_seg, crop, self.config
                )
            )
        scores = torch.cat(maps).view(T, B, K, *crop).permute(1, 2, 0, 3, 4)  # (B, K, T, c, c)
        preds = scores.new_zeros(B, len(classes), *feats.image_size)
        count = scores.new_zeros(1, 1, *feats.image_size)
        for k, (y1, y2, x1, x2) in enumerate(feats.boxes):
            preds[:, :, y1:y2, x1:x2] += scores[:, k]
            count[:, :, y1:y2, x1:x2] += 1
        cfg = self.config
        probs = background_floor(preds / count, classes, cfg.background_names, cfg.background_threshold)
        return torch.logit(probs, eps=PROBABILITY_EPS)

    def encode_text(self, classes: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 3's prompt embeddings T×32×D and attention masks T×32 of ``classes`` (cached per class list)."""
        if not classes:
            raise ValueError("the class list is empty")
        device = self.sam3.text_projection.weight.device
        key = (tuple(classes), device)
        if self._text_cache is None or self._text_cache[0] != key:
            batch = self.tokenizer(
                list(classes),
                padding="max_length",
                max_length=TEXT_LENGTH,
                truncation=True,
                return_tensors="pt",
            )
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            text = self.sam3.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
            self._text_cache = (key, (text, mask))
        return self._text_cache[1]

    def probabilities(self, feats: SegEarthOV3Features, classes: Sequence[str]) -> torch.Tensor:
        """Per-class probabilities B×T×H×W (float32) for ``classes``: the sigmoid of :meth:`segment`."""
        return torch.sigmoid(self.segment(feats, classes).float())

    @classmethod
    def from_config(cls, config: SegEarthOV3Config, *, pretrained: bool = True) -> SegEarthOV3:
        """Load SAM 3 (a random ``sam3_arch`` when ``pretrained=False``)."""
        sam3, tokenizer = load_sam3(config.sam3, arch=config.sam3_arch, pretrained=pretrained)
        return cls(config, sam3, tokenizer)
