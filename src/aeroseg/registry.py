"""Every model of the package enters here: one table from preset name to model family, and the functions
that build and load models through it.

A :class:`Family` says what a kind of model is: its class (imported on first use, so that listing presets
or parsing a command line loads no torch), the backbone weights a user may name, whether it needs a trained
checkpoint to segment, whether it trains, the checkpoint formats it reads and its training criterion. Its
class is a :class:`aeroseg.segmenter.Segmenter` (``encode`` / ``probabilities``, ``window``) with
``from_config`` and, for a trained family, ``from_pretrained``, ``save_pretrained``, ``forward_train`` and
``param_groups``; a ``reference_probabilities(image, classes)`` method, where it has one, is its official
evaluation protocol (``aeroseg evaluate --mode reference``). A
:class:`Preset` is one configuration of a family, with the paper (or source) that reports it. Every front end
(``aeroseg.build``, ``aeroseg.load``, predict, evaluate, serve, demo, bench, train, convert) resolves models
with :func:`build`, :func:`load` or :func:`segmenter`; a new model family is one :class:`Family`, its presets
and its own modules.

    aeroseg.build("aeroseg", clip="openai/clip-vit-base-patch16")   # a preset on its backbones' weights
    aeroseg.load("runs/isaid/final")                                 # a checkpoint folder, hub id or file
    segmenter(ModelRequest(preset="segearth-ov"), "cpu")             # what predict / serve / evaluate run
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aeroseg import variants
from aeroseg.config import CONFIG_NAME, WEIGHTS_NAME, ConfigBase
from aeroseg.errors import CheckpointError, UserError
from aeroseg.hub import hub_file, is_hub_id
from aeroseg.san.config import san, san_large
from aeroseg.scan.config import scan, scan_large
from aeroseg.sed.config import sed, sed_large
from aeroseg.training_free.config import training_free
from aeroseg.training_free.segearth_config import segearth_ov, segearth_ov3


@dataclass(frozen=True)
class Family:
    """A kind of model: everything the front ends need to know to build, load, run and train it."""

    name: str
    model: (
        str  # "module:Class": from_config(config, pretrained=), from_pretrained(path), encode, probabilities
    )
    paper: str  # the work it reproduces
    weights: tuple[
        str, ...
    ]  # backbone sources a user may name (flags --clip, --guidance, ...): config fields
    trained: bool  # True: its presets segment only from a trained checkpoint (random new layers otherwise)
    trains: bool = False  # ``aeroseg train`` trains it (forward_train, param_groups, criterion)
    formats: tuple[str, ...] = ()  # "format" values of the checkpoint folders its save_pretrained writes
    recognise: str | None = None  # "module:function": whether a state dict is one of its official files
    criterion: str | None = None  # "module:Class" of its training loss, built as Class(config, ignore_index=)
    load_file: str | None = None  # "module:function" reading an official file as function(path, preset=,
    # **overrides); None: the model class's from_pretrained reads files too

    def model_class(self) -> Any:
        return _attribute(self.model)


@dataclass(frozen=True)
class Preset:
    """One configuration of a family."""

    name: str
    family: Family
    config: Callable[[], ConfigBase]  # the preset's config, every field at its default
    paper: str  # where it is reported

    @property
    def summary(self) -> str:
        """The first line of the config builder's docstring."""
        return (self.config.__doc__ or "").strip().splitlines()[0]


AEROSEG = Family(
    "aeroseg",
    "aeroseg.modeling.aeroseg:AerOSeg",
    "AerOSeg; CAT-Seg (CVPR'24) and OVRS (TGRS'25) as presets of the same code",
    weights=("clip", "guidance"),
    trained=True,
    trains=True,
    formats=("aeroseg",),
    recognise="aeroseg.convert.catseg:is_catseg_checkpoint",
    criterion="aeroseg.losses:AerOSegLoss",
)
TRAINING_FREE = Family(
    "training-free",
    "aeroseg.training_free.model:TrainingFreeSegmenter",
    "ours, after SegEarth-OV (CVPR'25)",
    weights=("clip", "guidance"),
    trained=False,
)
SEGEARTH_OV = Family(
    "segearth-ov", "aeroseg.training_free.segearth_ov:SegEarthOV", "SegEarth-OV (CVPR'25)",
    weights=("clip", "simfeatup"), trained=False,
)  # fmt: skip
SEGEARTH_OV3 = Family(
    "segearth-ov3", "aeroseg.training_free.segearth_ov3:SegEarthOV3", "SegEarth-OV3 (arXiv 2512.08730)",
    weights=("sam3",), trained=False,
)  # fmt: skip
SED = Family(
    "sed",
    "aeroseg.sed.model:SED",
    "SED (CVPR'24)",
    weights=("clip",),
    trained=True,
    trains=True,
    formats=("sed",),
    recognise="aeroseg.convert.sed:recognise",
    criterion="aeroseg.sed.criterion:SEDLoss",
    load_file="aeroseg.convert.sed:load_sed",
)
SAN = Family(
    "san",
    "aeroseg.san.model:SAN",
    "SAN (CVPR'23)",
    weights=("clip",),
    trained=True,
    trains=True,
    formats=("san",),
    recognise="aeroseg.convert.san:recognise",
    criterion="aeroseg.mask_classification.criterion:MaskClassificationLoss",
    load_file="aeroseg.convert.san:load_san",
)
SCAN = Family(
    "scan",
    "aeroseg.scan.model:SCAN",
    "SCAN (CVPR'24)",
    weights=("clip",),  # its Swin: the config field swin (model: swin: in a --config file)
    trained=True,
    trains=True,
    formats=("scan",),
    recognise="aeroseg.convert.scan:recognise",
    criterion="aeroseg.mask_classification.criterion:MaskClassificationLoss",
    load_file="aeroseg.convert.scan:load_scan",
)
# official files are recognised in this order: SED before AerOSeg, since a SED file also holds the two
# prefixes that mark a CAT-Seg one (sem_seg_head.predictor.transformer., .clip_model.)
FAMILIES: dict[str, Family] = {
    f.name: f for f in (SED, SAN, SCAN, AEROSEG, TRAINING_FREE, SEGEARTH_OV, SEGEARTH_OV3)
}

_A = variants
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("aeroseg", AEROSEG, _A.aeroseg, "Config-C, the model"),
        Preset("baseline", AEROSEG, _A.baseline, "Table 3"),
        Preset("config-a", AEROSEG, _A.config_a, "Table 3"),
        Preset("config-b", AEROSEG, _A.config_b, "Table 3"),
        Preset("aeroseg-sam-vit-h", AEROSEG, _A.aeroseg_sam_vit_h, "Table 6"),
        Preset("aeroseg-sam2-hiera-b+", AEROSEG, _A.aeroseg_sam2_hiera_b_plus, "Table 6"),
        Preset("aeroseg-sam2.1-hiera-b+", AEROSEG, _A.aeroseg_sam2_1_hiera_b_plus, "Table 6"),
        Preset("aeroseg-sam3", AEROSEG, _A.aeroseg_sam3, "SAM 3 as guidance (ours)"),
        Preset("aeroseg-clip-vit-l", AEROSEG, _A.aeroseg_clip_vit_l, "Suppl. Table 7"),
        Preset("aeroseg-georsclip", AEROSEG, _A.aeroseg_georsclip, "Suppl. Table 7"),
        Preset("aeroseg-skyclip", AEROSEG, _A.aeroseg_skyclip, "Suppl. Table 7"),
        Preset("cat-seg", AEROSEG, _A.cat_seg, "Table 2 (CAT-Seg)"),
        Preset("cat-seg-large", AEROSEG, _A.cat_seg_large, "CAT-Seg's released ViT-L"),
        Preset("ovrs", AEROSEG, _A.ovrs, "Table 2 (OVRS)"),
        Preset("sed", SED, sed, "Table 2 (SED)"),
        Preset("sed-large", SED, sed_large, "SED's released ConvNeXt-L"),
        Preset("san", SAN, san, "Table 2 (SAN)"),
        Preset("san-large", SAN, san_large, "SAN's released ViT-L/14"),
        Preset("scan", SCAN, scan, "Table 2 (SCAN)"),
        Preset("scan-large", SCAN, scan_large, "SCAN's released ViT-L/14"),
        Preset("training-free", TRAINING_FREE, training_free, "Suppl. Table 8 (SegEarth-OV family)"),
        Preset("segearth-ov", SEGEARTH_OV, segearth_ov, "Suppl. Table 8"),
        Preset("segearth-ov3", SEGEARTH_OV3, segearth_ov3, "SegEarth-OV3"),
    )
}
DEFAULT_PRESET = "aeroseg"  # aeroseg.build() without a preset
DEFAULT_SEGMENTER = "training-free"  # predict, serve and demo without --checkpoint or --preset


def presets() -> list[str]:
    """Names of the presets."""
    return list(PRESETS)


def preset(name: str) -> Preset:
    """The preset called ``name``; a one-line :class:`UserError` listing them for an unknown name."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def untrained_presets() -> list[str]:
    """Presets that segment without a trained checkpoint."""
    return [name for name, p in PRESETS.items() if not p.family.trained]


def preset_config(name: str, **overrides: Any) -> ConfigBase:
    """The config of preset ``name`` with ``overrides`` (any field of its config class) applied."""
    try:
        return preset(name).config().replace(**overrides)
    except (TypeError, ValueError) as error:
        raise UserError(f"preset {name!r}: {error}") from None


def build(
    preset: str | None = None,
    *,
    clip: str | None = None,
    guidance: str | None = None,
    pretrained: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> Any:
    """Build the model of a preset (or load a checkpoint of it, see :func:`load`).

    Args:
        preset: a name from :func:`presets` (default ``aeroseg``; with ``checkpoint``, the checkpoint's own).
        clip, guidance: hub id, local directory or original checkpoint file of the backbones (default: the
            preset's public weights); the other backbones are named the same way by their config field
            (``simfeatup=``, ``sam3=``).
        pretrained: ``False`` builds the paper-size architecture with random weights, offline.
        checkpoint: a trained model instead of the backbones' weights.
        overrides: any field of the preset's config (``aeroseg.AerOSegConfig``, ...).
    """
    if checkpoint is not None:
        if clip is not None or guidance is not None:
            raise UserError("a checkpoint carries its own CLIP and guidance weights: drop clip= / guidance=")
        return load(checkpoint, preset=preset, **overrides)
    name = preset or DEFAULT_PRESET
    sources = {k: v for k, v in (("clip", clip), ("guidance", guidance)) if v is not None}
    config = preset_config(name, **sources, **overrides)
    if pretrained and getattr(config, "clip", None) == "":
        raise UserError(f"preset {name!r} has no public CLIP weights: pass clip=FILE (or --clip FILE)")
    return PRESETS[name].family.model_class().from_config(config, pretrained=pretrained)


def load(source: str | os.PathLike[str], *, preset: str | None = None, **overrides: Any) -> Any:
    """The model of a checkpoint, in eval mode on the CPU.

    ``source``: a checkpoint folder (``config.json`` + weights, written by ``save_pretrained`` or ``aeroseg
    train``; a training run's folder means its ``final/``; a file inside a checkpoint folder means the
    folder), a hub id of such a folder, or an official checkpoint file of a family (CAT-Seg / OVRS / SED /
    SAN / SCAN ``.pth``, local or ``hf://OWNER/REPO/FILE``; read by the family's ``load_file``). ``preset``
    and ``overrides`` adjust what an official file does not say; a checkpoint folder carries its own config
    (``preset`` checks it; SED, SAN and SCAN folders take inference overrides too). A preset of another
    family than the file's is refused in one line.
    """
    text = str(source)
    path = Path(hub_file(text, "checkpoint")).expanduser()
    if path.is_file() and path.name in (CONFIG_NAME, WEIGHTS_NAME):
        path = path.parent
    if path.is_dir():
        folder = checkpoint_folder(path)
        family = _family_of_folder(folder)
        return family.model_class().from_pretrained(folder, preset=preset, **overrides).eval()
    if path.is_file():
        family = _family_of_file(path)
        if preset is not None and preset in PRESETS and PRESETS[preset].family is not family:
            raise CheckpointError(
                f"{path} is a {family.paper} checkpoint, not one of preset {preset!r} ({PRESETS[preset].family.paper})"
            )
        read = _attribute(family.load_file) if family.load_file else family.model_class().from_pretrained
        return read(path, preset=preset, **overrides).eval()
    if is_hub_id(text) and not path.exists():
        return AEROSEG.model_class().from_pretrained(text, preset=preset, **overrides).eval()
    raise CheckpointError(f"checkpoint {text!r} does not exist")


def checkpoint_folder(path: Path) -> Path:
    """``path``, or ``path/final`` for a training run's folder (``aeroseg train -o RUN``); a run that has no
    ``final/`` yet is refused in one line naming it and the run's latest checkpoint."""
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / "final" / CONFIG_NAME).is_file():
        return path / "final"
    if (path / "config.yaml").is_file() or (path / "checkpoints").is_dir():  # a run that did not finish
        steps = sorted(path.glob(f"checkpoints/step_*/{CONFIG_NAME}"))  # step_NNNNNN: in step order
        latest = f"; pass its latest checkpoint {steps[-1].parent}, or resume the run" if steps else ""
        raise CheckpointError(
            f"{path} is a training run without {path / 'final'} (written when the training ends){latest}"
        )
    return path


def _family_of_folder(folder: Path) -> Family:
    try:
        document = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        document = None
    kind = document.get("format") if isinstance(document, dict) else None
    for family in FAMILIES.values():
        if kind in family.formats:
            return family
    return AEROSEG  # its loader names what is wrong with the folder in one line


def _family_of_file(path: Path) -> Family:
    """The first family of :data:`FAMILIES` whose ``recognise`` accepts the file's tensors; a file none
    recognises goes to AerOSeg's converter, which names its first unexpected and missing tensors in one line."""
    from aeroseg.convert._checkpoint import read_state_dict

    known = [f for f in FAMILIES.values() if f.recognise]
    expected = " or ".join(f"a {f.paper} checkpoint" for f in known)
    state = read_state_dict(path, expected)
    for family in known:
        if _attribute(family.recognise)(state):  # type: ignore[arg-type]
            return family
    return AEROSEG


@dataclass(frozen=True)
class ModelRequest:
    """What a command line (or a caller) asks to run: a trained checkpoint, or a preset on its backbones."""

    checkpoint: str | None = None  # folder, hub id or official file
    preset: str | None = None  # without checkpoint: the preset (default: training-free); with it: a check
    weights: dict[str, str] = field(default_factory=dict)  # backbone sources by name (clip, guidance, ...)
    overrides: dict[str, Any] = field(default_factory=dict)  # config fields (a --config file's model:)

    def describe(self) -> str:
        """A short name of the model for messages and reports."""
        return self.checkpoint or self.preset or DEFAULT_SEGMENTER


def segmenter(request: ModelRequest, device: Any = "cpu") -> Any:
    """The model ``request`` names, in eval mode on ``device``: what predict, evaluate, serve and demo run.

    A preset whose family needs a trained checkpoint is refused without one (its new layers would be
    random); backbone sources that the preset does not take, or that a checkpoint carries itself, are
    refused in one line.
    """
    if request.checkpoint is not None:
        if request.weights:
            flags = ", ".join(f"--{k}" for k in sorted(request.weights))
            raise UserError(
                f"--clip and --guidance (like --simfeatup, --sam3) choose the backbones of a preset; a checkpoint "
                f"carries its own: drop {flags}"
            )
        model = load(request.checkpoint, preset=request.preset, **request.overrides)
    else:
        name = request.preset or DEFAULT_SEGMENTER
        entry = preset(name)
        if entry.family.trained:
            raise UserError(
                f"`{name}` needs a trained checkpoint: pass --checkpoint, or use a training-free preset "
                f"({', '.join(untrained_presets())})"
            )
        wrong = sorted(set(request.weights) - set(entry.family.weights))
        if wrong:
            takes = ", ".join(f"--{k}" for k in entry.family.weights)
            raise UserError(f"--{wrong[0]} does not apply to --preset {name}; it takes {takes}")
        model = build(name, **request.weights, **request.overrides)
    return model.to(device).eval()


def criterion(family: Family, config: ConfigBase, *, ignore_index: int) -> Any:
    """The training loss of ``family`` for a model of ``config``."""
    if family.criterion is None:
        raise UserError(f"the {family.name} family does not train")
    return _attribute(family.criterion)(config, ignore_index=ignore_index)


def family(request: ModelRequest) -> Family:
    """The family of the model ``request`` names, found without loading it (a checkpoint folder's
    config.json, or the tensor names of an official file)."""
    if request.checkpoint is None:
        return preset(request.preset or DEFAULT_SEGMENTER).family
    path = Path(hub_file(request.checkpoint, "checkpoint")).expanduser()
    if path.is_file() and path.name in (CONFIG_NAME, WEIGHTS_NAME):
        path = path.parent
    if path.is_dir():
        return _family_of_folder(checkpoint_folder(path))
    return _family_of_file(path) if path.is_file() else AEROSEG


def window(request: ModelRequest) -> int:
    """The window side the model of ``request`` runs at by default (its class's ``window``)."""
    return int(family(request).model_class().window)


def _attribute(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)
