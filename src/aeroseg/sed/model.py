"""SED (Xie et al., CVPR 2024, Fig. 2): hierarchical encoder → cost map → gradual fusion decoder, with category
early rejection; and its checkpoint format (``sed/sed_model.py`` ``SED`` and ``sed/modeling/`` of xb534/SED)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.backbones import directory_tokenizer
from aeroseg.checkpoint_folder import build_and_load, folder_config, read_meta, save_folder
from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.errors import CheckpointError
from aeroseg.sed.config import SEDConfig
from aeroseg.sed.convnext_clip import ConvNextClipTowers, load_towers
from aeroseg.sed.cost_map import CostMap
from aeroseg.sed.early_rejection import REJECTED_LOGIT
from aeroseg.sed.gradual_fusion_decoder import GradualFusionDecoder
from aeroseg.sed.hierarchical_encoder import HierarchicalEncoder
from aeroseg.sed.inference import reference_probabilities
from aeroseg.sed.text_encoder import TextEncoder
from aeroseg.segmenter import unit_images

FORMAT = "sed"


@dataclass
class SEDFeatures:
    """What :meth:`SED.encode` computes once per image batch: dense CLIP embeddings B×E×h×w, the decoder's
    three projected encoder skips, and the (H, W) the outputs are resized to."""

    dense: torch.Tensor
    skips: list[torch.Tensor]
    image_size: tuple[int, int]


@dataclass
class SEDOutput:
    """logits: B×T×8h×8w of the last stage; rejection: the three rejection heads' B×T×… scores (training)."""

    logits: torch.Tensor
    rejection: list[torch.Tensor]


class SED(nn.Module):
    """Open-vocabulary segmentation by a simple encoder-decoder. Build it with :meth:`from_config`,
    :meth:`from_pretrained` or :func:`aeroseg.convert.sed.load_sed`; the constructor receives built parts."""

    def __init__(
        self,
        config: SEDConfig,
        encoder: HierarchicalEncoder,
        text_encoder: TextEncoder,
        cost_map: CostMap,
        decoder: GradualFusionDecoder,
        clip_arch: dict[str, Any],
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.text_encoder = text_encoder
        self.cost_map = cost_map
        self.decoder = decoder
        self.clip_arch = clip_arch
        self._text_cache: tuple[Any, torch.Tensor] | None = None
        self.text_encoder.requires_grad_(False)  # SED.__init__: only "visual" tensors of the CLIP train
        self.encoder.requires_grad_(config.clip_finetune == "full")

    window = 768  # the side predict runs it at: SED's training crop and CLIP input (clip_image_size)
    value_range = (0.0, 1.0)  # float images in this range (uint8 is scaled by encode)

    # ------------------------------------------------------------------------------------------ Fig. 2
    def forward(self, images: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """images: B×3×H×W in [0, 1] or uint8 → logits B×T×H×W (rejected classes: ``REJECTED_LOGIT``)."""
        feats = self.encode(images)
        return self._resize(self._decode(feats, classes), feats)

    def encode(self, images: torch.Tensor) -> SEDFeatures:
        """The class-independent part: the hierarchical encoder and the projections of its skips."""
        images = unit_images(images)
        levels, dense = self.encoder(images)  # [res2..res5], B×E×h×w
        return SEDFeatures(dense, self.decoder.project_skips(levels), (images.shape[-2], images.shape[-1]))

    def probabilities(self, feats: SEDFeatures, classes: Sequence[str]) -> torch.Tensor:
        """B×T×H×W sigmoid probabilities, float32, for ``classes`` from features of :meth:`encode`.

        As ``SED.forward`` in eval mode: the sigmoid is taken at the decoder's resolution, then resized
        (bilinear) to the image; a class rejected early has probability 0.
        """
        return self._resize(self._decode(feats, classes).float().sigmoid(), feats)

    def forward_train(self, images: torch.Tensor, classes: Sequence[str]) -> SEDOutput:
        """The decoder's logits and the rejection heads' scores, at their own resolutions (the criterion
        resizes them to the masks)."""
        feats = self.encode(images)
        cost, embedded = self.cost_map(feats.dense, self.encode_text(classes))
        return SEDOutput(*self.decoder(embedded, cost, feats.skips))

    def encode_text(self, classes: Sequence[str]) -> torch.Tensor:
        """T×P×E text embeddings (no gradient: the text tower is frozen); cached per class list in eval mode."""
        if not classes:
            raise ValueError("the class list is empty")
        with torch.no_grad():
            if self.training:
                return self.text_encoder(classes)
            device = self.text_encoder.clip.text_projection.weight.device
            autocast = (
                torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
            )
            key = (tuple(classes), device, self.text_encoder.clip.dtype, autocast)
            if self._text_cache is None or self._text_cache[0] != key:
                self._text_cache = (key, self.text_encoder(classes))
            return self._text_cache[1]

    def _decode(self, feats: SEDFeatures, classes: Sequence[str]) -> torch.Tensor:
        """Logits B×T×8h×8w; with category early rejection (eval mode), image by image as SED evaluates."""
        cost, embedded = self.cost_map(feats.dense, self.encode_text(classes))
        if not self.config.early_rejection or self.training:
            return self.decoder(embedded, cost, feats.skips)[0]
        out = []
        for b in range(embedded.shape[0]):
            skips = [s[b : b + 1] for s in feats.skips]
            kept, index = self.decoder.forward_rejecting(
                embedded[b : b + 1], cost[b : b + 1], skips, self.config.early_rejection_topk
            )
            logits = kept.new_full((1, embedded.shape[2], *kept.shape[-2:]), REJECTED_LOGIT)
            logits[:, index] = kept
            out.append(logits)
        return torch.cat(out)

    def reference_probabilities(self, image: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """T×H×W for one image 3×H×W by SED's evaluation protocol (:mod:`aeroseg.sed.inference`), which
        ``aeroseg evaluate`` runs in its reference mode."""
        return reference_probabilities(self, image, classes)

    @staticmethod
    def _resize(x: torch.Tensor, feats: SEDFeatures) -> torch.Tensor:
        return F.interpolate(x, size=feats.image_size, mode="bilinear", align_corners=False)

    # ------------------------------------------------------------------------------------------ training
    def param_groups(self) -> list[dict[str, Any]]:
        """``train_net.py`` ``build_optimizer``: every trainable tensor at ``SOLVER.BASE_LR``, those of the CLIP
        (``clip_model`` in the module name) at ``BASE_LR × SOLVER.CLIP_MULTIPLIER``."""
        clip = [p for p in self.encoder.parameters() if p.requires_grad]
        taken = {id(p) for p in clip}
        new = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        multiplier = self.config.clip_lr_multiplier
        groups = [
            {"name": "sed", "params": new, "lr": self.config.lr, "lr_multiplier": 1.0},
            {"name": "clip", "params": clip, "lr": self.config.lr * multiplier, "lr_multiplier": multiplier},
        ]
        return [g for g in groups if g["params"]]

    def train(self, mode: bool = True) -> SED:
        super().train(mode)
        self.text_encoder.eval()  # frozen; no dropout in it either way
        self._text_cache = None
        return self

    # ------------------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: SEDConfig, *, pretrained: bool = True) -> SED:
        """The model of ``config``, its CLIP ConvNeXt loaded from ``config.clip`` (random ``config.clip_arch``
        when ``pretrained=False``, offline)."""
        towers = load_towers(config.clip, arch=config.clip_arch, pretrained=pretrained)
        return cls.assemble(config, towers, clip_tokenizer())

    @classmethod
    def assemble(cls, config: SEDConfig, towers: ConvNextClipTowers, tokenizer: Any) -> SED:
        """The model of ``config`` around built CLIP towers (random decoder)."""
        widths = tuple(towers.trunk.config.hidden_sizes)
        if tuple(config.decoder_guidance_dims) != widths[2::-1]:
            raise CheckpointError(
                f"decoder_guidance_dims {tuple(config.decoder_guidance_dims)} must be the encoder's res4, res3, "
                f"res2 widths {widths[2::-1]}"
            )
        encoder = HierarchicalEncoder(
            towers.trunk,
            towers.head,
            image_size=config.clip_image_size,
            pixel_mean=config.pixel_mean,
            pixel_std=config.pixel_std,
        )
        decoder = GradualFusionDecoder(
            hidden_dim=config.hidden_dim,
            dims=config.decoder_dims,
            encoder_dims=config.decoder_guidance_dims,
            skip_dims=config.decoder_guidance_proj_dims,
            cost_dims=config.decoder_cost_dims,
            kernel_sizes=config.kernel_sizes,
            num_heads=config.num_heads,
            pool=config.class_pool,
            pool_eval=config.class_pool_eval,
        )
        return cls(
            config,
            encoder,
            TextEncoder(towers.text, tokenizer, templates=config.prompt_templates),
            CostMap(num_templates=len(config.prompt_templates), hidden_dim=config.hidden_dim),
            decoder,
            towers.arch,
        )

    # ------------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``config.json`` (SED config + CLIP architecture), ``model.safetensors`` and the tokenizer."""
        meta = {"format": FORMAT, "config": self.config.to_dict(), "clip_config": self.clip_arch}
        save_folder(self, directory, meta, self.text_encoder.tokenizer)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike[str],
        *,
        map_location: str = "cpu",
        preset: str | None = None,
        **overrides: Any,
    ) -> SED:
        """A model saved by :meth:`save_pretrained`, rebuilt from that directory alone (eval mode); ``preset``
        checks what it holds, ``overrides`` set inference fields (``early_rejection``, ...). SED's released
        ``.pth`` files load with :func:`aeroseg.convert.sed.load_sed`."""
        directory = Path(directory).expanduser()
        meta = read_meta(
            directory, FORMAT, "SED", " (SED's released .pth files load with aeroseg.convert.sed)"
        )
        config = folder_config(SEDConfig, meta, directory, preset, overrides)
        tokenizer = directory_tokenizer(directory)

        def build() -> SED:
            return cls.assemble(config, ConvNextClipTowers(meta["clip_config"], initialise=False), tokenizer)

        return build_and_load(build, directory, map_location).to(map_location).eval()
