"""AerOSeg (paper Fig. 2): the six components wired together, and its checkpoint format."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aeroseg.backbones import (
    TOKENIZER_FILES,
    backbone_configs,
    backbones_from_configs,
    directory_tokenizer,
    load_clip,
    load_guidance_encoder,
)
from aeroseg.checkpoint_folder import build_and_load, save_folder
from aeroseg.config import CONFIG_NAME, WEIGHTS_NAME, AerOSegConfig
from aeroseg.convert.catseg import load_catseg_weights, read_catseg
from aeroseg.convert.tokenizer import clip_tokenizer
from aeroseg.errors import CheckpointError
from aeroseg.hub import hub_file, hub_snapshot, is_hub_id
from aeroseg.modeling.back_projection import SemanticBackProjection
from aeroseg.modeling.clip_guidance import ClipGuidance
from aeroseg.modeling.correlation import CorrelationFeatures
from aeroseg.modeling.correlation_refinement import CorrelationRefinement
from aeroseg.modeling.guidance_encoder import (
    GuidanceFeatures,
    Sam2GuidanceEncoder,
    Sam3GuidanceEncoder,
    SamGuidanceEncoder,
)
from aeroseg.modeling.upsampling_decoder import UpsamplingDecoder
from aeroseg.modeling.vision_language_backbone import VisionLanguageBackbone
from aeroseg.precision import fp32, keep_norms_fp32
from aeroseg.segmenter import unit_images
from aeroseg.variants import fit_guidance_layers

FORMAT = "aeroseg"
_upsample = fp32(F.interpolate)  # the logits are resized in fp32 (docs/model.md §12)


@dataclass
class ImageFeatures:
    """What :meth:`AerOSeg.encode` computes once per image batch.

    clip: B×R×C×h×w dense CLIP embeddings (rotated back, L2-normalised); guidance: the guidance maps;
    image_size: (H, W) of the input, the size of the logits.
    """

    clip: torch.Tensor
    guidance: GuidanceFeatures
    image_size: tuple[int, int]


@dataclass
class AerOSegOutput:
    """logits: B×T×H×W; reconstruction and target: B×C×h×w (back-projection, training only)."""

    logits: torch.Tensor
    reconstruction: torch.Tensor | None = None
    target: torch.Tensor | None = None


class AerOSeg(nn.Module):
    """Open-vocabulary segmentation with CLIP correlation, SAM guidance and semantic back-projection.

    Build it with :func:`aeroseg.build` or :meth:`from_pretrained`; the constructor receives built parts.
    A :class:`aeroseg.segmenter.Segmenter`: :meth:`encode` once per image, :meth:`probabilities` per class list.
    """

    window = 512  # the window side predict runs it at (each window is resized to CLIP's and SAM's inputs)
    value_range = (0.0, 1.0)  # float images in this range (uint8 is scaled by encode)

    def __init__(
        self,
        config: AerOSegConfig,
        backbone: VisionLanguageBackbone,
        guidance_encoder: SamGuidanceEncoder | Sam2GuidanceEncoder | ClipGuidance,
        correlation: CorrelationFeatures,
        refinement: CorrelationRefinement,
        back_projection: SemanticBackProjection | None,
        decoder: UpsamplingDecoder,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.guidance_encoder = guidance_encoder
        self.correlation = correlation
        self.refinement = refinement
        self.back_projection = back_projection
        self.decoder = decoder
        self._text_cache: tuple[Any, torch.Tensor] | None = None
        self._freeze_backbones()
        keep_norms_fp32(self)  # the precision rule (docs/model.md §12)

    # --------------------------------------------------------------------------------- the paper's Fig. 2
    def forward(self, images: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
        """images: B×3×H×W, float in [0, 1] or uint8; classes: T names → logits B×T×H×W."""
        return self.segment(self.encode(images), classes)

    def forward_train(self, images: torch.Tensor, classes: Sequence[str]) -> AerOSegOutput:
        """Forward pass with the back-projection reconstruction and its (stop-gradient) target."""
        feats = self.encode(images)
        text = self.encode_text(classes)  # T×P×C
        refined = self._refine(feats, text)  # B×d×T×h×w
        reconstruction = target = None
        if self.back_projection is not None:
            reconstruction = self.back_projection(refined)  # B×C_t×h×w, Eq. 7
            target = self._reconstruction_target(images, feats).detach()
        return AerOSegOutput(self._decode(refined, feats), reconstruction, target)

    def encode(self, images: torch.Tensor) -> ImageFeatures:
        """Run the CLIP image encoder (all rotations, one batch) and the guidance encoder once."""
        images = unit_images(images)  # uint8 → [0, 1]
        clip, clip_guidance = self.backbone.encode_image(images)  # B×R×C×h×w, [B×C×h×w, B×D×h×w, ...]
        if isinstance(self.guidance_encoder, ClipGuidance):
            guidance = self.guidance_encoder(clip_guidance[0], clip_guidance[1:])
        else:
            guidance = self.guidance_encoder(images, self.backbone.grid_size)
        return ImageFeatures(clip=clip, guidance=guidance, image_size=(images.shape[-2], images.shape[-1]))

    def segment(self, feats: ImageFeatures, classes: Sequence[str]) -> torch.Tensor:
        """Logits B×T×H×W for ``classes`` from features computed once by :meth:`encode`."""
        return self._decode(self._refine(feats, self.encode_text(classes)), feats)

    def probabilities(self, feats: ImageFeatures, classes: Sequence[str]) -> torch.Tensor:
        """Per-class sigmoid probabilities B×T×H×W (float32) for ``classes`` (the training targets are BCE)."""
        return torch.sigmoid(self.segment(feats, classes).float())

    def encode_text(self, classes: Sequence[str]) -> torch.Tensor:
        """T×P×C text embeddings; cached per class list while the model is in eval mode."""
        if not classes:
            raise ValueError("the class list is empty")
        if self.training or torch.is_grad_enabled():
            return self.backbone.encode_text(classes)
        device = self.backbone.clip.text_projection.weight.device
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        # the autocast dtype is part of the key: bf16 text never meets an fp32 pass
        key = (tuple(classes), device, self.backbone.clip.dtype, autocast)
        if self._text_cache is None or self._text_cache[0] != key:
            self._text_cache = (key, self.backbone.encode_text(classes))
        return self._text_cache[1]

    def _refine(self, feats: ImageFeatures, text: torch.Tensor) -> torch.Tensor:
        corr = self.correlation(feats.clip, text)  # B×d×T×h×w, Eq. 3–4
        return self.refinement(corr, feats.guidance.final, text)  # Eq. 5–6, ×refinement_layers

    def _decode(self, refined: torch.Tensor, feats: ImageFeatures) -> torch.Tensor:
        logits = self.decoder(refined, feats.guidance.decoder)  # B×T×4h×4w, Eq. 8–11
        return _upsample(logits, size=feats.image_size, mode="bilinear", align_corners=False)

    def _reconstruction_target(self, images: torch.Tensor, feats: ImageFeatures) -> torch.Tensor:
        grid = self.backbone.grid_size
        target = self.config.reconstruction_target
        if target == "sam":
            return feats.guidance.final
        if target == "clip":
            return feats.clip[:, self._unrotated]
        return F.interpolate(images, size=(grid, grid), mode="area")  # "rgb"

    @property
    def _unrotated(self) -> int:
        rotations = self.config.rotations
        return rotations.index(0) if 0 in rotations else 0

    # ------------------------------------------------------------------------------------------ training
    def _freeze_backbones(self) -> None:
        """Only what the paper trains keeps requires_grad: CLIP's q/v projections and the new modules (and the
        guidance encoder when configured; :class:`SamGuidanceEncoder` handles that itself)."""
        clip = self.backbone.clip
        clip.requires_grad_(False)
        last = len(clip.vision_model.encoder.layers) - 1
        for name, module in clip.named_modules():
            if not name.endswith(tuple(f".{n}" for n in self.config.clip_trainable)):
                continue
            unused = self.config.dense_last_block and f"vision_model.encoder.layers.{last}.self_attn." in name
            if unused and not name.endswith(".v_proj"):  # the dense last block uses only the value path
                continue
            module.requires_grad_(True)

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for the optimizer, each with its learning rate (docs/model.md §8)."""
        clip = [p for p in self.backbone.parameters() if p.requires_grad]
        guidance = (
            [p for p in self.guidance_encoder.parameters() if p.requires_grad]
            if not isinstance(self.guidance_encoder, ClipGuidance)
            else []
        )
        taken = {id(p) for p in clip + guidance}
        new = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        groups = [
            {"name": "aeroseg", "params": new, "lr": self.config.lr},
            {"name": "clip", "params": clip, "lr": self.config.clip_lr},
            {"name": "guidance", "params": guidance, "lr": self.config.guidance_lr},
        ]
        return [g for g in groups if g["params"]]

    def train(self, mode: bool = True) -> AerOSeg:
        super().train(mode)
        self._text_cache = None
        return self

    # ------------------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: AerOSegConfig, *, pretrained: bool = True) -> AerOSeg:
        """Build the model of ``config``, loading the backbones it names (random when ``pretrained=False``)."""
        clip, tokenizer = load_clip(
            config.clip, arch=config.clip_arch, pretrained=pretrained, activation=config.clip_activation
        )
        guidance = None
        if config.guidance_type != "clip":
            guidance = load_guidance_encoder(
                config.guidance_type, config.guidance, arch=config.guidance_arch, pretrained=pretrained
            )
        if config.guidance_type == "sam":
            config = fit_guidance_layers(config, guidance.config.num_hidden_layers, "SAM")
        elif config.guidance_type == "clip":
            config = fit_guidance_layers(config, clip.config.vision_config.num_hidden_layers, "CLIP")
        return cls._assemble(config, clip, tokenizer, guidance)

    @classmethod
    def _assemble(
        cls, config: AerOSegConfig, clip: Any, tokenizer: Any, guidance: nn.Module | None
    ) -> AerOSeg:
        backbone = VisionLanguageBackbone(
            clip,
            tokenizer,
            image_size=config.clip_image_size,
            rotations=config.rotations,
            templates=config.prompt_templates,
            dense_last_block=config.dense_last_block,
            guidance_layers=config.guidance_layers if config.guidance_type == "clip" else (),
        )
        if config.guidance_type == "sam":
            size = config.guidance_image_size or guidance.config.image_size
            encoder: Any = SamGuidanceEncoder(
                guidance,
                image_size=size,
                layers=config.guidance_layers,
                final=config.sam_final,
                trainable=config.guidance_trainable,
                resize=config.guidance_resize,
                attention=config.guidance_attention,
            )
        elif config.guidance_type == "sam2":
            size = config.guidance_image_size or guidance.config.backbone_config.image_size[0]
            encoder = Sam2GuidanceEncoder(
                guidance, image_size=size, trainable=config.guidance_trainable, resize=config.guidance_resize
            )
        elif config.guidance_type == "sam3":
            size = config.guidance_image_size or guidance.config.image_size
            encoder = Sam3GuidanceEncoder(
                guidance, image_size=size, trainable=config.guidance_trainable, resize=config.guidance_resize
            )
        else:
            encoder = ClipGuidance(
                embed_dim=backbone.embed_dim,
                hidden_size=backbone.hidden_size,
                upsample_dims=config.clip_guidance_dims,
                normalized=config.clip_guidance_normalized,
            )
        d = config.hidden_dim
        back_projection = None
        if config.back_projection:
            target_dim = {"sam": encoder.final_dim, "clip": backbone.embed_dim, "rgb": 3}
            back_projection = SemanticBackProjection(
                num_classes=config.back_projection_classes,
                hidden_dim=d,
                mlp_dim=config.back_projection_hidden,
                out_dim=target_dim[config.reconstruction_target],
            )
        return cls(
            config,
            backbone,
            encoder,
            CorrelationFeatures(
                num_maps=config.num_correlation_channels, hidden_dim=d, kernel_size=config.correlation_kernel
            ),
            CorrelationRefinement(
                dim=d,
                num_layers=config.refinement_layers,
                guidance_in_dim=encoder.final_dim,
                guidance_dim=config.guidance_proj_dim,
                text_in_dim=backbone.embed_dim,
                text_dim=config.text_proj_dim,
                spatial_heads=config.spatial_heads,
                class_heads=config.class_heads,
                window_size=config.window_size,
                mlp_ratio=config.mlp_ratio,
                class_pool=config.class_pool,
                class_pool_eval=config.class_pool_eval,
                class_pad_length=config.class_pad_length,
                class_residual=config.class_residual,
                class_align_corners=config.class_align_corners,
                class_attention_proj=config.class_attention_proj,
                spatial_position_bias=config.spatial_position_bias,
                shared_guidance_norm=config.shared_guidance_norm,
            ),
            back_projection,
            UpsamplingDecoder(
                in_dim=d,
                guidance_in_dims=encoder.decoder_dims,
                guidance_dims=config.decoder_guidance_dims,
                out_dims=config.decoder_dims,
                attention=config.decoder_attention,
                activation=config.decoder_attention_activation,
                fuse_bias=config.decoder_fuse_bias,
            ),
        )

    # ------------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``config.json`` (AerOSeg config + backbone architectures), ``model.safetensors`` and the CLIP
        tokenizer the model was built with (``tokenizer.json``, ``vocab.json``, ``merges.txt``, ...)."""
        guidance = None if isinstance(self.guidance_encoder, ClipGuidance) else self.guidance_encoder.encoder
        meta = {
            "format": FORMAT,
            "config": self.config.to_dict(),
            **backbone_configs(self.backbone.clip, guidance),
        }
        save_folder(self, directory, meta, self.backbone.tokenizer)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike[str],
        *,
        map_location: str = "cpu",
        preset: str | None = None,
        **overrides: Any,
    ) -> AerOSeg:
        """Load a model from a directory or hub id saved by :meth:`save_pretrained`, with no other file; or
        from a CAT-Seg / OVRS checkpoint file (local, or ``hf://OWNER/REPO/FILE``), converted at load time
        (:mod:`aeroseg.convert.catseg`; ``preset`` and ``overrides`` adjust what such a file does not say)."""
        file = Path(hub_file(str(source), "checkpoint")).expanduser()
        if file.is_file():  # a CAT-Seg / OVRS file, converted by key mapping
            config, clip, state, unexpected = read_catseg(file, preset=preset, **overrides)
            model = cls._assemble(config, clip, clip_tokenizer(), None)
            load_catseg_weights(model, state, unexpected, file)
            return model.to(map_location).eval()
        if overrides:
            raise CheckpointError(
                f"{source}: config overrides apply to CAT-Seg / OVRS files; an AerOSeg checkpoint carries its config"
            )
        directory = _checkpoint_directory(source)
        try:
            meta = json.loads((directory / CONFIG_NAME).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(
                f"{directory} is not an AerOSeg checkpoint (its config.json has no AerOSeg config)"
            )
        try:
            config = AerOSegConfig.from_dict(meta["config"])
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{directory / CONFIG_NAME}: {str(error).splitlines()[0]}") from None
        if preset is not None and preset != config.preset:
            raise CheckpointError(f"{source} holds a {config.preset!r} model, not {preset!r}")
        tokenizer = directory_tokenizer(directory)

        def build() -> AerOSeg:
            clip, guidance = backbones_from_configs(config.guidance_type, meta)
            return cls._assemble(config, clip, tokenizer, guidance)

        return build_and_load(build, directory, map_location).eval()


def _checkpoint_directory(source: str | os.PathLike[str]) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise CheckpointError(
                f"{path} is not an AerOSeg checkpoint: it needs {CONFIG_NAME} and {WEIGHTS_NAME} "
                "(written by AerOSeg.save_pretrained or aeroseg train)"
            )
        return path
    if not is_hub_id(str(source)):
        raise CheckpointError(f"AerOSeg checkpoint {str(source)!r} does not exist")
    return hub_snapshot(str(source), [CONFIG_NAME, WEIGHTS_NAME, *TOKENIZER_FILES], "AerOSeg checkpoint")
