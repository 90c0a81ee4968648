"""The training-free open-vocabulary segmenter (preset ``training-free``), a SegEarth-OV-style pipeline
built from public CLIP (and optionally SAM) weights, with the same protocol as :class:`aeroseg.AerOSeg`.

    image → dense CLIP features (training-free last block, sliding crops, [CLS] bias removed)
          → cosine with the prompt-ensembled class embeddings → [SAM regions: cluster mean]
          → joint bilateral upsampling guided by the image → softmax over the classes → background
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from aeroseg.backbones import load_clip, load_guidance_encoder
from aeroseg.errors import CheckpointError
from aeroseg.segmenter import unit_images
from aeroseg.training_free.config import TrainingFreeConfig
from aeroseg.training_free.dense_clip import TrainingFreeClip
from aeroseg.training_free.regions import SamFeatures, kmeans_regions, region_mean
from aeroseg.training_free.upsampling import joint_bilateral_upsample

PROBABILITY_EPS = 1e-6  # probabilities are clamped to [eps, 1 - eps] before the logit


@dataclass
class TrainingFreeFeatures:
    """What :meth:`TrainingFreeSegmenter.encode` computes once per image batch.

    clip: B×C×h×w dense features (class score = features · normalised text embedding); regions: B×g×g
    SAM cluster ids, or None; guide: B×3×H×W the images (the upsampler's guide); image_size: (H, W).
    """

    clip: torch.Tensor
    regions: torch.Tensor | None
    guide: torch.Tensor
    image_size: tuple[int, int]


def background_probabilities(
    probs: torch.Tensor, classes: Sequence[str], names: Sequence[str], threshold: float
) -> torch.Tensor:
    """Where the best non-background probability is below ``threshold``, every background class (a name
    in ``names``, any case) gets at least 1 − that probability: SegEarth-OV's prob_thd, kept as a probability
    (the argmax is the official one: background wherever no class reaches the threshold).

    Args:
        probs: B×T×H×W probabilities over ``classes``.
    Returns:
        B×T×H×W.
    """
    names = {n.casefold() for n in names}
    background = [i for i, c in enumerate(classes) if c.casefold() in names]
    foreground = [i for i in range(len(classes)) if i not in background]
    if not background or not foreground or threshold <= 0:
        return probs
    best = probs[:, foreground].amax(1, keepdim=True)  # (B, 1, H, W)
    lifted = torch.where(
        best < threshold, torch.maximum(probs[:, background], 1 - best), probs[:, background]
    )
    probs = probs.clone()
    probs[:, background] = lifted
    return probs


class TrainingFreeSegmenter(nn.Module):
    """Open-vocabulary segmentation without training: nothing in it has ``requires_grad``.

    ``model(images, classes)`` returns logits B×T×H×W whose sigmoid is the softmax probability of each
    class among ``classes`` (so the probabilities of a pixel sum to 1, background handling aside), which
    is what :func:`aeroseg.inference.sliding_window_scores` and ``aeroseg predict`` blend and threshold.
    Build it with ``aeroseg.build("training-free", clip=..., guidance=...)`` or :meth:`from_config`.
    """

    window = 512  # the window side predict runs it at
    value_range = (0.0, 1.0)  # float images in this range (uint8 is scaled where the model takes it)

    def __init__(
        self, config: TrainingFreeConfig, backbone: TrainingFreeClip, sam: SamFeatures | None
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.sam = sam
        self._text_cache: tuple[Any, torch.Tensor] | None = None
        self.requires_grad_(False)
        self.eval()

    # ---------------------------------------------------------------------------------------- pipeline
    def forward(self, images: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """images: B×3×H×W in [0, 1]; classes: T names → logits B×T×H×W."""
        return self.segment(self.encode(images), classes)

    def encode(self, images: torch.Tensor) -> TrainingFreeFeatures:
        """The class-independent part: dense CLIP features and the SAM regions of ``images``."""
        cfg = self.config
        images = unit_images(images)  # uint8 → [0, 1]
        clip = self.backbone.encode_dense(images)  # (B, C, h, w)
        regions = None
        if self.sam is not None and cfg.region_mix > 0:
            regions = kmeans_regions(
                self.sam(images), cfg.region_clusters, cfg.region_iterations
            )  # (B, g, g)
        return TrainingFreeFeatures(clip, regions, images, (images.shape[-2], images.shape[-1]))

    def segment(self, feats: TrainingFreeFeatures, classes: Sequence[str]) -> torch.Tensor:
        """Logits B×T×H×W for ``classes`` from features computed once by :meth:`encode`."""
        text = self.encode_text(classes).float()  # (T, C)
        with torch.autocast(feats.clip.device.type, enabled=False):  # logit_scale × score needs float32
            scores = torch.einsum("bchw,tc->bthw", feats.clip.float(), text)  # cos − λ·cos([CLS])
            scores = self._to_pixels(scores, feats)  # (B, T, H, W)
            probs = self._background((self.config.logit_scale * scores).softmax(1), classes)
            return torch.logit(probs, eps=PROBABILITY_EPS)

    def _to_pixels(self, scores: torch.Tensor, feats: TrainingFreeFeatures) -> torch.Tensor:
        """Grid scores B×T×h×w → blended with their SAM region means → upsampled to B×T×H×W."""
        cfg = self.config
        if feats.regions is not None:
            size = feats.regions.shape[-2:]
            scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)  # SAM grid
            scores = (1 - cfg.region_mix) * scores + cfg.region_mix * region_mean(scores, feats.regions)
        if cfg.upsampler == "bilinear":
            return F.interpolate(scores, size=feats.image_size, mode="bilinear", align_corners=False)
        return joint_bilateral_upsample(
            scores,
            feats.guide,
            radius=cfg.jbu_radius,
            sigma_spatial=cfg.jbu_sigma_spatial,
            sigma_range=cfg.jbu_sigma_range,
        )

    def encode_text(self, classes: Sequence[str]) -> torch.Tensor:
        """T×C prompt-ensembled class embeddings (mean over the templates, re-normalised), cached per
        class list, device and dtype (the weights never change)."""
        if not classes:
            raise ValueError("the class list is empty")
        clip = self.backbone.clip
        key = (tuple(classes), clip.text_projection.weight.device, clip.dtype)
        if self._text_cache is None or self._text_cache[0] != key:
            text = self.backbone.encode_text(classes)  # (T, P, C)
            self._text_cache = (key, F.normalize(text.mean(1), dim=-1))
        return self._text_cache[1]

    def _background(self, probs: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        return background_probabilities(
            probs, classes, self.config.background_names, self.config.background_threshold
        )

    def probabilities(self, feats: TrainingFreeFeatures, classes: Sequence[str]) -> torch.Tensor:
        """Per-class probabilities B×T×H×W (float32) for ``classes``: the sigmoid of :meth:`segment`."""
        return torch.sigmoid(self.segment(feats, classes).float())

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: TrainingFreeConfig, *, pretrained: bool = True) -> TrainingFreeSegmenter:
        """Load the backbones ``config`` names (random architectures when ``pretrained=False``)."""
        clip, tokenizer = load_clip(config.clip, arch=config.clip_arch, pretrained=pretrained)
        sam = None
        if config.guidance_type != "none":
            if pretrained and not config.guidance:
                raise CheckpointError(
                    "the training-free model needs SAM weights: pass --guidance ID|DIR|FILE, or --guidance none"
                )
            sam = load_guidance_encoder(
                config.guidance_type, config.guidance, arch=config.guidance_arch, pretrained=pretrained
            )
        return cls.assemble(config, clip, tokenizer, sam)

    @classmethod
    def assemble(
        cls, config: TrainingFreeConfig, clip: CLIPModel, tokenizer: CLIPTokenizer, sam: nn.Module | None
    ) -> TrainingFreeSegmenter:
        """The model from its parts: CLIP, its tokenizer and the SAM / SAM2 image encoder (or None)."""
        if sam is not None:
            own = sam.config.image_size if config.guidance_type == "sam" else None
            if own is None:
                own = sam.config.backbone_config.image_size[0]
            size = config.guidance_image_size or own
            sam = SamFeatures(sam, kind=config.guidance_type, image_size=size)
        backbone = TrainingFreeClip(
            clip,
            tokenizer,
            image_size=config.clip_image_size,
            crop=config.clip_crop,
            stride=config.clip_stride,
            rotations=config.rotations,
            templates=config.prompt_templates,
            attention=config.last_block_attention,
            residual=config.last_block_residual,
            cls_bias=config.cls_bias,
        )
        return cls(config, backbone, sam)
