"""SAN (Xu et al., CVPR 2023, Fig. 2): the frozen CLIP, the side adapter network and mask recognition wired
together as ``MendelXu/SAN`` ``san/model/san.py`` (``SAN.forward``), and its checkpoint format."""

from __future__ import annotations

import os
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
    semantic_inference,
)
from aeroseg.san.clip_features import ClipFeatureExtractor
from aeroseg.san.config import SANConfig
from aeroseg.san.mask_decoder import MaskDecoder
from aeroseg.san.mask_recognition import MaskRecognitionHead
from aeroseg.san.open_vocabulary_classifier import OpenVocabularyClassifier
from aeroseg.san.side_adapter import SideAdapterNetwork
from aeroseg.segmenter import unit_images

FORMAT = "san"
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, as open_clip's preprocess gives SAN
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class SANFeatures:
    """What :meth:`SAN.encode` computes once per image batch (everything but the class names).

    mask_embeddings: per decoded side block, B×Q×D (L2-normalised); mask_logits: per decoded block, B×Q×h×w
    at the side adapter's grid; image_size: (H, W) of the input; padded_size: (H', W') after padding.
    """

    mask_embeddings: list[torch.Tensor]
    mask_logits: list[torch.Tensor]
    image_size: tuple[int, int]
    padded_size: tuple[int, int]


class SAN(nn.Module):
    """Open-vocabulary segmentation by mask proposals that a side network predicts and CLIP recognises.

    Build it with :meth:`from_config`, :meth:`from_pretrained` or :func:`aeroseg.convert.san.load_san`; the
    constructor receives built parts.
    """

    def __init__(
        self,
        config: SANConfig,
        clip_features: ClipFeatureExtractor,
        side_adapter: SideAdapterNetwork,
        recognition: MaskRecognitionHead,
        classifier: OpenVocabularyClassifier,
        clip_config: dict[str, Any],
    ) -> None:
        super().__init__()
        self.config = config
        self.clip_features = clip_features
        self.side_adapter = side_adapter
        self.recognition = recognition
        self.classifier = classifier
        self.clip_config = clip_config
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self._freeze_clip()

    window = 640  # the side predict runs it at: SAN's training crop and test shorter side (test_size)
    value_range = (0.0, 1.0)  # float images in this range (uint8 is scaled by encode)

    # -------------------------------------------------------------------------------------- the paper's Fig. 2
    def forward(self, images: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """images: B×3×H×W, float in [0, 1] or uint8; classes: T names → the official scores B×T×H×W."""
        return self.scores(self.encode(images), classes)

    def encode(self, images: torch.Tensor) -> SANFeatures:
        """CLIP features, the side adapter's proposals and their mask embeddings (the last block only unless
        training)."""
        return self._encode(images, all_blocks=self.training)

    def _encode(self, images: torch.Tensor, *, all_blocks: bool) -> SANFeatures:
        images = unit_images(images)
        size = (images.shape[-2], images.shape[-1])
        x = (images - self.pixel_mean) / self.pixel_std
        d = self.config.size_divisibility
        x = F.pad(x, (0, -size[1] % d, 0, -size[0] % d))  # zeros after normalisation (detectron2 ImageList)
        clip_input = x
        if self.config.asymmetric_input:
            clip_input = F.interpolate(
                x, scale_factor=self.config.clip_resolution, mode="bilinear", align_corners=False
            )
        clip = self.clip_features(clip_input)  # tokens of layers 0..feature_last_layer
        proposals = self.side_adapter(x, clip, all_blocks=all_blocks)  # [(B×Q×h×w, [B×heads×Q×h×w])]
        embeddings = [self.recognition(clip.tokens[-1], clip.grid, biases) for _, biases in proposals]
        masks = [m for m, _ in proposals]
        return SANFeatures(embeddings, masks, size, (x.shape[-2], x.shape[-1]))

    def class_logits(self, feats: SANFeatures, classes: Sequence[str]) -> list[torch.Tensor]:
        """Per decoded block, B×Q×(T+1) logits of the proposals over the classes and "no object"."""
        weights = self.classifier(classes)  # (T+1)×D
        return [torch.einsum("bqc,nc->bqn", emb, weights.to(emb.dtype)) for emb in feats.mask_embeddings]

    def scores(
        self, feats: SANFeatures, classes: Sequence[str], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """The official semantic scores B×T×h×w (``size``, default the input's) of the last decoded block:
        proposals upsampled to the padded input, cropped, resized to ``size``, then
        :func:`~aeroseg.mask_classification.semantic_inference` (``SEM_SEG_POSTPROCESS_BEFORE_INFERENCE``)."""
        logits = self.class_logits(feats, classes)[-1]
        masks = F.interpolate(
            feats.mask_logits[-1], size=feats.padded_size, mode="bilinear", align_corners=False
        )
        masks = masks[..., : feats.image_size[0], : feats.image_size[1]]
        size = size or feats.image_size
        if tuple(size) != feats.image_size:
            masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        return semantic_inference(logits.float(), masks.float())

    def probabilities(self, feats: SANFeatures, classes: Sequence[str]) -> torch.Tensor:
        """B×T×H×W in [0, 1]: :meth:`scores`, divided where they sum above 1 over the classes (the argmax is
        the official one)."""
        return as_probabilities(self.scores(feats, classes))

    def reference_probabilities(self, image: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """T×H×W for one image 3×H×W by SAN's evaluation protocol
        (:func:`aeroseg.mask_classification.reference_probabilities`), which ``aeroseg evaluate`` runs in its
        reference mode."""
        return reference_probabilities(self, image, classes)

    def forward_train(self, images: torch.Tensor, classes: Sequence[str]) -> SetPrediction:
        """The set predictions of every ``deep_supervision`` block, for :class:`aeroseg.san.SANCriterion`."""
        feats = self._encode(images, all_blocks=True)
        logits = self.class_logits(feats, classes)
        layers = [MaskPredictions(c, m) for c, m in zip(logits, feats.mask_logits, strict=True)]
        return SetPrediction(layers, feats.padded_size)

    # ------------------------------------------------------------------------------------------ training
    def _freeze_clip(self) -> None:
        """CLIP is frozen but for its position embedding (``SAN.CLIP_FROZEN_EXCLUDE``)."""
        for part in (self.clip_features, self.recognition, self.classifier):
            part.requires_grad_(False)
        self.classifier.bg_embed.requires_grad_(True)
        position = self.clip_features.embeddings.position_embedding
        position.requires_grad_(self.config.train_clip_position_embedding)

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer groups as ``train_net.py`` ``build_optimizer``: base lr, ×``SOLVER.BACKBONE_MULTIPLIER``
        in the side adapter, ×``SOLVER.CLIP_MULTIPLIER`` for CLIP; ``weight_decay`` 0 where the official sets
        it (``WEIGHT_DECAY_EMBED_GROUP`` names, ``nn.LayerNorm``), the trainer's elsewhere."""
        c = self.config
        no_decay = ("pos_embed", "query_embed", "query_pos_embed")
        side, side_no_decay = [], []
        for module in self.side_adapter.modules():
            for name, param in module.named_parameters(recurse=False):
                embedding = name in no_decay or isinstance(module, nn.LayerNorm)
                (side_no_decay if embedding else side).append(param)
        clip = [p for p in self.clip_features.parameters() if p.requires_grad]
        mult_side, mult_clip = c.side_adapter_lr_multiplier, c.clip_lr_multiplier
        groups = [
            {"name": "side_adapter", "params": side, "lr": c.lr * mult_side, "lr_multiplier": mult_side},
            {
                "name": "side_adapter_embeddings",
                "params": side_no_decay,
                "lr": c.lr * mult_side,
                "lr_multiplier": mult_side,
                "weight_decay": 0.0,
            },
            {
                "name": "clip",
                "params": clip,
                "lr": c.lr * mult_clip,
                "lr_multiplier": mult_clip,
                "weight_decay": 0.0,
            },
            {"name": "san", "params": [self.classifier.bg_embed], "lr": c.lr, "lr_multiplier": 1.0},
        ]
        return [g for g in groups if g["params"]]

    # ------------------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: SANConfig, *, pretrained: bool = True) -> SAN:
        """Build the model of ``config``, loading the CLIP it names (random when ``pretrained=False``); the side
        adapter starts from its initialisation, as the official one (``SIDE_ADAPTER.PRETRAINED`` False)."""
        clip, tokenizer = load_clip(
            config.clip, arch=config.clip_arch, pretrained=pretrained, activation=config.clip_activation
        )
        return cls.assemble(config, clip, tokenizer)

    @classmethod
    def assemble(cls, config: SANConfig, clip: CLIPModel, tokenizer: CLIPTokenizer) -> SAN:
        """The SAN of ``config`` around the parts of ``clip`` (its layers are shared, not copied)."""
        vision = clip.vision_model
        layers = vision.encoder.layers
        n = config.feature_last_layer
        if n >= len(layers):
            raise CheckpointError(f"feature_last_layer {n} needs more than the {len(layers)} CLIP layers")
        features = ClipFeatureExtractor(vision.embeddings, vision.pre_layrnorm, nn.ModuleList(layers[:n]))
        heads = clip.config.vision_config.num_attention_heads
        recognition = MaskRecognitionHead(
            nn.ModuleList(layers[n:]),
            vision.post_layernorm,
            clip.visual_projection,
            num_heads=heads,
            downsample=config.rec_downsample,
        )
        if config.attn_bias_heads not in (1, heads):
            raise CheckpointError(
                f"attn_bias_heads must be 1 or the CLIP's {heads} heads, got {config.attn_bias_heads}"
            )
        decoder = MaskDecoder(
            in_channels=config.side_width,
            num_heads=config.attn_bias_heads,
            num_layers=config.attn_bias_layers,
            embed_channels=config.embed_channels,
            mlp_channels=config.mlp_channels,
            mlp_layers=config.mlp_layers,
            rescale=config.rescale_attn_bias,
        )
        side_adapter = SideAdapterNetwork(
            width=config.side_width,
            depth=config.side_depth,
            heads=config.side_heads,
            patch=config.side_patch,
            mlp_ratio=config.side_mlp_ratio,
            image_size=config.side_image_size,
            num_queries=config.num_queries,
            clip_width=features.width,
            fusion=config.fusion_pairs,
            deep_supervision=config.deep_supervision,
            decoder=decoder,
        )
        classifier = OpenVocabularyClassifier(
            clip.text_model, clip.text_projection, clip.logit_scale, tokenizer, config.prompt_templates
        )
        return cls(config, features, side_adapter, recognition, classifier, clip.config.to_dict())

    # ------------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``config.json`` (SAN config + CLIP architecture), ``model.safetensors`` and the tokenizer."""
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
    ) -> SAN:
        """Load a model saved by :meth:`save_pretrained` from its directory alone (eval mode); ``preset`` checks
        what it holds, ``overrides`` set inference fields. An official checkpoint file loads through
        :func:`aeroseg.convert.san.load_san`."""
        directory = Path(directory).expanduser()
        meta = read_meta(directory, FORMAT, "SAN")
        config = folder_config(SANConfig, meta, directory, preset, overrides)
        tokenizer = directory_tokenizer(directory)

        def build() -> SAN:
            clip, _ = backbones_from_configs("clip", {"clip_config": meta["clip_config"]})
            return cls.assemble(config, clip, tokenizer)

        return build_and_load(build, directory, map_location).eval()
