"""SCAN (Liu et al., CVPR 2024, Fig. 2): Mask2Former proposals on a Swin backbone, their class embeddings
calibrated by CLIP's view of the image, recognised against CLIP text, and ensembled with CLIP's reading of
each region under the contextual shift; wired as ``yongliu20/SCAN`` ``scan/ovseg_model.py`` (``SCAN.forward``,
``SCAN.semantic_inference``). Also its checkpoint format.

What of SCAN is class-independent (:meth:`SCAN.encode`): everything but the text. The decoder takes no text;
its class embeddings, their calibration and the regions' CLIP embeddings come from the image alone. A class
list only adds the text embeddings, two matrix products and the ensemble (:meth:`SCAN.scores`).
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from aeroseg.backbones import backbones_from_configs, directory_tokenizer, load_clip
from aeroseg.checkpoint_folder import build_and_load, folder_config, read_meta, save_folder
from aeroseg.errors import CheckpointError
from aeroseg.mask_classification import (
    MaskPredictions,
    SetPrediction,
    as_probabilities,
    reference_probabilities,
)
from aeroseg.scan.clip_features import GlobalClip
from aeroseg.scan.config import SCANConfig
from aeroseg.scan.contextual_shift import ContextualShiftClip
from aeroseg.scan.pixel_decoder import PixelDecoder
from aeroseg.scan.region_ensemble import CLIP_MEAN, CLIP_STD, ensemble_probabilities, mask_regions
from aeroseg.scan.semantic_integration import SemanticIntegration
from aeroseg.scan.swin_backbone import SwinFeatures, build_swin
from aeroseg.scan.text_classifier import TextClassifier
from aeroseg.scan.transformer_decoder import MaskedTransformerDecoder
from aeroseg.segmenter import unit_images

FORMAT = "scan"


@dataclass
class SCANFeatures:
    """What :meth:`SCAN.encode` computes once per image batch (everything but the class names).

    embeddings: per decoder prediction kept, B×Q×D calibrated class embeddings; mask_logits: the same
    predictions' B×Q×h×w masks (stride 4 of the padded input); region_embeddings / valid: per image, V×D CLIP
    embeddings of the valid proposals' regions and which of the Q they are (eval mode with the ensemble);
    image_size: (H, W) of the input; padded_size: (H', W') after padding.
    """

    embeddings: list[torch.Tensor]
    mask_logits: list[torch.Tensor]
    region_embeddings: list[torch.Tensor] | None
    valid: list[torch.Tensor] | None
    image_size: tuple[int, int]
    padded_size: tuple[int, int]


class SCAN(nn.Module):
    """Open-vocabulary segmentation by Mask2Former proposals calibrated with CLIP.

    Build it with :meth:`from_config`, :meth:`from_pretrained` or :func:`aeroseg.convert.scan.load_scan`; the
    constructor receives built parts.
    """

    def __init__(
        self,
        config: SCANConfig,
        backbone: SwinFeatures,
        pixel_decoder: PixelDecoder,
        decoder: MaskedTransformerDecoder,
        global_clip: GlobalClip,
        integration: SemanticIntegration,
        region_clip: ContextualShiftClip,
        classifier: TextClassifier,
        clip_config: dict[str, Any],
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.decoder = decoder
        self.global_clip = global_clip
        self.integration = integration
        self.region_clip = region_clip
        self.classifier = classifier
        self.clip_config = clip_config
        for name, values in (("pixel_mean", config.pixel_mean), ("pixel_std", config.pixel_std)):
            self.register_buffer(name, torch.tensor(values).view(1, 3, 1, 1), persistent=False)
        for name, values in (("clip_mean", CLIP_MEAN), ("clip_std", CLIP_STD)):
            self.register_buffer(name, torch.tensor(values).view(1, 3, 1, 1) * 255, persistent=False)
        self._freeze_clip()

    window = 640  # the side predict runs it at: SCAN's training crop and test shorter side (test_size)
    value_range = (0.0, 1.0)  # float images in this range (uint8 is scaled by encode)

    # -------------------------------------------------------------------------------------- the paper's Fig. 2
    def forward(self, images: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """images: B×3×H×W, float in [0, 1] or uint8; classes: T names → the official scores B×T×H×W."""
        return self.scores(self.encode(images), classes)

    def encode(self, images: torch.Tensor) -> SCANFeatures:
        """Proposals, their calibrated class embeddings and (eval mode) their regions' CLIP embeddings."""
        return self._encode(images, all_layers=self.training)

    def _encode(self, images: torch.Tensor, *, all_layers: bool) -> SCANFeatures:
        images = unit_images(images) * 255  # the official pipeline's 0..255
        size = (images.shape[-2], images.shape[-1])
        d = self.config.size_divisibility
        pad = (0, -size[1] % d, 0, -size[0] % d)  # zeros after normalisation (detectron2 ImageList)
        x = F.pad((images - self.pixel_mean) / self.pixel_std, pad)
        c = self.config
        clip = self.global_clip(
            F.pad((images - self.clip_mean) / self.clip_std, pad),
            patch_layers=c.clip_layers,
            cls_layers=c.replace_layers,
        )
        mask_features, maps = self.pixel_decoder(self.backbone(x))
        embeddings, mask_logits = self.decoder(maps, mask_features)  # per prediction: B×Q×D, B×Q×h×w
        if not all_layers:
            embeddings, mask_logits = embeddings[-1:], mask_logits[-1:]
        memory = self.integration.memory(clip)
        embeddings = [self.integration(e, memory, clip.embedding) for e in embeddings]
        padded = (x.shape[-2], x.shape[-1])
        feats = SCANFeatures(embeddings, mask_logits, None, None, size, padded)
        if not self.training and c.clip_ensemble:
            rng: Any = random if c.shift_seed is None else random.Random(c.shift_seed)
            feats.region_embeddings, feats.valid = [], []
            for b in range(images.shape[0]):
                regions = mask_regions(
                    images[b],
                    self._mask_probs(feats, b),
                    threshold=c.mask_threshold,
                    fill=c.mask_fill,
                    expand_ratio=c.mask_expand_ratio,
                    size=c.clip_image_size,
                )
                context = {layer: tokens[b] for layer, tokens in clip.cls_tokens.items()}
                feats.region_embeddings.append(self.region_clip(regions.pixels, regions.masks, context, rng))
                feats.valid.append(regions.valid)
        return feats

    @staticmethod
    def _mask_probs(feats: SCANFeatures, b: int) -> torch.Tensor:
        """Q×H×W mask probabilities of image ``b``: upsampled to the padded input, cropped to the image."""
        logits = F.interpolate(feats.mask_logits[-1][b : b + 1], size=feats.padded_size, mode="bilinear")
        return logits[0, :, : feats.image_size[0], : feats.image_size[1]].sigmoid()

    def class_logits(self, feats: SCANFeatures, classes: Sequence[str]) -> list[torch.Tensor]:
        """Per kept prediction, B×Q×(T+1) logits of the proposals over the classes and "no object"."""
        weights = self.classifier(classes)
        return [self.classifier.logits(e, weights) for e in feats.embeddings]

    def scores(
        self, feats: SCANFeatures, classes: Sequence[str], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """The official semantic scores B×T×h×w (``size``, default the input's): per image, the (ensembled)
        class probabilities spread over the mask probabilities at the input size, then resized bilinearly."""
        weights = self.classifier(classes)
        class_logits = self.classifier.logits(feats.embeddings[-1], weights).float()
        out = []
        for b in range(class_logits.shape[0]):
            masks = self._mask_probs(feats, b).float()
            if feats.region_embeddings is None or feats.valid is None:
                probs = F.softmax(class_logits[b], dim=-1)[..., :-1]
                keep = torch.ones(masks.shape[0], dtype=torch.bool, device=masks.device)
            else:
                region_logits = self.classifier.logits(feats.region_embeddings[b], weights).float()
                probs, keep = ensemble_probabilities(
                    class_logits[b], region_logits, feats.valid[b], self.config.ensemble_weight
                )
            score = torch.einsum("qc,qhw->chw", probs, masks[keep])[None]
            if size is not None and tuple(size) != feats.image_size:
                score = F.interpolate(score, size=size, mode="bilinear", align_corners=False)
            out.append(score)
        return torch.cat(out)

    def probabilities(self, feats: SCANFeatures, classes: Sequence[str]) -> torch.Tensor:
        """B×T×H×W in [0, 1]: :meth:`scores`, divided where they sum above 1 over the classes (the argmax is
        the official one)."""
        return as_probabilities(self.scores(feats, classes))

    def reference_probabilities(self, image: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """T×H×W for one image 3×H×W by SCAN's evaluation protocol
        (:func:`aeroseg.mask_classification.reference_probabilities`), which ``aeroseg evaluate`` runs in its
        reference mode."""
        return reference_probabilities(self, image, classes)

    def forward_train(self, images: torch.Tensor, classes: Sequence[str]) -> SetPrediction:
        """The set predictions of the final layer and, with ``deep_supervision``, of the auxiliary ones the
        official criterion weighs (the first ``decoder_layers - 1`` of ``decoder_layers + 1``)."""
        feats = self._encode(images, all_layers=True)
        logits = self.class_logits(feats, classes)
        layers = [MaskPredictions(c, m) for c, m in zip(logits, feats.mask_logits, strict=True)]
        aux = layers[: self.config.decoder_layers - 1] if self.config.deep_supervision else []
        return SetPrediction([*aux, layers[-1]], feats.padded_size)

    # ------------------------------------------------------------------------------------------ training
    def _freeze_clip(self) -> None:
        """Both CLIP image towers and the text tower are frozen; the "no object" embedding trains."""
        for part in (self.global_clip, self.region_clip, self.classifier):
            part.requires_grad_(False)
        self.classifier.non_object_embedding.requires_grad_(True)

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups as ``train_net.py`` ``build_optimizer``: base lr, ×``SOLVER.BACKBONE_MULTIPLIER`` in
        the backbone; ``weight_decay`` 0 for normalisation and embedding modules and relative-position tables
        (``WEIGHT_DECAY_NORM``, ``WEIGHT_DECAY_EMBED`` 0), the trainer's (``SOLVER.WEIGHT_DECAY``) elsewhere."""
        c = self.config
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {k: [] for k in _GROUPS}
        for name, module in self.named_modules():
            no_decay_module = isinstance(module, (*_NORMS, nn.Embedding))
            for param_name, param in module.named_parameters(recurse=False):
                if param.requires_grad:
                    no_decay = no_decay_module or param_name in _NO_DECAY_NAMES
                    groups[(name.startswith("backbone."), no_decay)].append(param)
        out = []
        for (backbone, no_decay), params in groups.items():
            multiplier = c.backbone_lr_multiplier if backbone else 1.0
            group = {"name": _GROUPS[(backbone, no_decay)], "params": params, "lr": c.lr * multiplier}
            group["lr_multiplier"] = multiplier
            if no_decay:
                group["weight_decay"] = 0.0
            out.append(group)
        return [g for g in out if g["params"]]

    # ------------------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: SCANConfig, *, pretrained: bool = True) -> SCAN:
        """Build the model of ``config``, loading the CLIP and Swin it names (random when ``pretrained=False``);
        the pixel decoder, decoder and integration start from the official initialisation."""
        clip, tokenizer = load_clip(
            config.clip, arch=config.clip_arch, pretrained=pretrained, activation=config.clip_activation
        )
        return cls.assemble(config, clip, tokenizer, build_swin(config, pretrained=pretrained))

    @classmethod
    def assemble(
        cls,
        config: SCANConfig,
        clip: CLIPModel,
        tokenizer: CLIPTokenizer,
        swin: SwinFeatures,
        global_clip: CLIPModel | None = None,
    ) -> SCAN:
        """The SCAN of ``config`` around ``clip`` (regions and text) and ``global_clip`` (the whole image; a copy
        of ``clip``'s image tower when None, as the official ``original_clip``)."""
        vision = clip.config.vision_config
        if clip.config.projection_dim != config.scan_dim:
            raise CheckpointError(
                f"scan_dim {config.scan_dim} must be the CLIP embedding size {clip.config.projection_dim}"
            )
        if vision.image_size != config.clip_image_size:
            raise CheckpointError(
                f"the CLIP takes {vision.image_size}² images, not {config.clip_image_size}²"
            )
        if max(config.clip_layers + config.replace_layers) > vision.num_hidden_layers:
            raise CheckpointError(
                f"clip_layers / replace_layers name layers beyond the CLIP's {vision.num_hidden_layers}"
            )
        source = global_clip if global_clip is not None else clip
        parts = (source.vision_model, source.visual_projection)
        if global_clip is None:
            parts = copy.deepcopy(parts)
        channels = [config.swin_embed_dim * 2**i for i in range(4)]
        integration = SemanticIntegration(
            clip_width=vision.hidden_size,
            dim=config.scan_dim,
            clip_layers=config.clip_layers,
            frequency_sigma=config.frequency_sigma,
            fusion_layers=config.fusion_layers,
            num_layers=config.integration_layers,
            num_heads=config.integration_heads,
            feedforward=config.integration_feedforward,
            dropout=config.integration_dropout,
        )
        region_clip = ContextualShiftClip(
            clip.vision_model,
            clip.visual_projection,
            replace_ratio=config.replace_ratio,
            replace_layers=config.replace_layers,
        )
        classifier = TextClassifier(
            clip.text_model, clip.text_projection, tokenizer, config.prompt_templates, config.temperature
        )
        return cls(
            config,
            swin,
            PixelDecoder(config, channels),
            MaskedTransformerDecoder(config),
            GlobalClip(*parts),
            integration,
            region_clip,
            classifier,
            clip.config.to_dict(),
        )

    # ------------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``config.json`` (SCAN config + CLIP architecture), ``model.safetensors`` and the tokenizer."""
        meta = {"format": FORMAT, "config": self.config.to_dict(), "clip_config": self.clip_config}
        save_folder(self, directory, meta, self.classifier.tokenizer)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike[str],
        *,
        map_location: str = "cpu",
        preset: str | None = None,
        **overrides: Any,
    ) -> SCAN:
        """Load a model saved by :meth:`save_pretrained` from its directory alone (eval mode); ``preset`` checks
        what it holds, ``overrides`` set inference fields (``mask_threshold``, ``ensemble_weight``, ...). An
        official checkpoint file loads through :func:`aeroseg.convert.scan.load_scan`."""
        directory = Path(directory).expanduser()
        meta = read_meta(directory, FORMAT, "SCAN")
        config = folder_config(SCANConfig, meta, directory, preset, overrides)
        tokenizer = directory_tokenizer(directory)

        def build() -> SCAN:
            clip, _ = backbones_from_configs("clip", {"clip_config": meta["clip_config"]})
            return cls.assemble(config, clip, tokenizer, build_swin(config, pretrained=False))

        return build_and_load(build, directory, map_location).eval()


_NORMS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)  # fmt: skip
"""``train_net.py``'s ``norm_module_types``: their parameters get ``SOLVER.WEIGHT_DECAY_NORM`` (0)."""
_NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")
_GROUPS = {
    (True, False): "backbone",
    (True, True): "backbone_no_decay",
    (False, False): "scan",
    (False, True): "scan_no_decay",
}
