"""The typed configuration of a training run, and how it is resolved from YAML files and flags.

The defaults below are the paper's (Sec. 4.2) or the choices named in ``docs/model.md`` §8. A run is resolved in
this order, later wins: these defaults, the run's saved ``config.yaml`` (when resuming), the ``--config`` file,
then the command-line flags. Model settings (learning rates included) are fields of
:class:`aeroseg.config.AerOSegConfig` and live under ``model:``; they are not repeated here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from aeroseg.config import AerOSegConfig
from aeroseg.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict[str, Any]": dict}  # field types


@dataclass
class TrainConfig:
    """Configuration of ``aeroseg train``; ``configs/default.yaml`` lists the same defaults."""

    data: str | None = None  # prepared dataset directory (DIR/dataset.yaml, DIR/train/...)
    out: str | None = None  # run directory: config.yaml, metrics.csv, tensorboard/, checkpoints/, final/
    preset: str = "aeroseg"  # model preset (`aeroseg presets`)
    pretrained: bool = True  # load the pretrained CLIP and guidance weights (False: random, for smoke tests)
    model: dict[str, Any] = field(default_factory=dict)  # AerOSegConfig overrides (clip, guidance, lr, ...)

    # "reference" below: KU-CVLAB/CAT-Seg, whose configs OVRS uses unchanged (docs/training.md, per setting)
    steps: int = 10_000  # optimizer steps (paper: 10k iSAID, 5k DLRSD, 15k OpenEarthMap)
    batch_size: int = (
        4  # GLOBAL batch (paper: 4; configs/config.yaml IMS_PER_BATCH), split across DDP processes
    )
    weight_decay: float = (
        1e-4  # AdamW weight decay, none on norm/embedding layers (config.yaml, train_net.py)
    )
    warmup_steps: int = 0  # linear warm-up before the cosine decay (config.yaml WARMUP_ITERS: 0)
    min_lr_ratio: float = (
        0.0  # the cosine ends at this fraction of each group's lr (detectron2 BASE_LR_END 0)
    )
    grad_clip: float = 0.01  # max gradient norm of the whole model (config.yaml CLIP_GRADIENTS); 0 disables
    crop_size: int | None = None  # crop side; None = the model's clip_image_size (config.yaml CROP.SIZE 384)
    crop_max_category_area: float = 1.0  # retry crops where one class covers more (SINGLE_CATEGORY_MAX_AREA)
    color_jitter: bool = True  # ColorAugSSD photometric jitter (config.yaml COLOR_AUG_SSD: True)
    rot90: bool = False  # random 90-degree rotations (ours; not in the reference mapper)

    seed: int = 0  # seeds the model init, the data order (seed + epoch) and every sample's augmentation
    precision: str = (
        "fp32"  # fp32 (TF32 matmuls on CUDA; reference: no AMP) | bf16 (autocast) | fp16 (+ GradScaler)
    )
    device: str | None = None  # None: cuda if available, else cpu; DDP uses cuda:LOCAL_RANK
    num_workers: int = 4  # data-loading processes per GPU
    save_every: int = 1000  # checkpoint every N steps (and at the end); 0 = only the final model
    keep_checkpoints: int = 3  # keep the N newest checkpoints; 0 keeps all
    eval_every: int = 0  # score the val split (s/u/h-mIoU, RUN/eval.csv) every N steps and at the end
    quiet: bool = False  # no progress bar

    def validate(self) -> None:
        """Raise :class:`UserError` (one line) for an unusable configuration."""
        for f in fields(self):
            value, optional = getattr(self, f.name), f.type.endswith(" | None")
            expected = _TYPES[f.type.removesuffix(" | None")]
            wrong = not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool)
            if (value is not None or not optional) and wrong:
                raise UserError(f"setting {f.name} must be {f.type}, got {value!r}")
        if not self.data:
            raise UserError("no dataset: pass --data DIR (a directory made by `aeroseg prepare`)")
        if not self.out:
            raise UserError("no run directory: pass --out RUN")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "save_every", "keep_checkpoints", "eval_every", "num_workers"):
            if getattr(self, name) < 0:
                raise UserError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.grad_clip < 0 or self.weight_decay < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise UserError("grad_clip and weight_decay must be >= 0 and min_lr_ratio in [0, 1]")
        if not 0 < self.crop_max_category_area <= 1:
            raise UserError(f"crop_max_category_area must be in (0, 1], got {self.crop_max_category_area}")
        if self.crop_size is not None and self.crop_size < 8:
            raise UserError(f"crop_size must be >= 8 pixels, got {self.crop_size}")
        if self.precision not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        known = {f.name for f in fields(AerOSegConfig)}
        unknown = sorted(set(self.model) - known)
        if unknown:
            raise UserError(
                f"unknown model setting(s) {', '.join(unknown)}; see aeroseg/config.py for the names"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def merge(config: TrainConfig, overrides: dict[str, Any], source: str) -> TrainConfig:
    """``config`` with ``overrides`` applied; ``model:`` entries are merged key by key."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(f"{source}: unknown training setting(s) {', '.join(unknown)}; see docs/training.md")
    model = overrides.get("model") or {}
    if not isinstance(model, dict):
        raise UserError(f"{source}: 'model' must be a mapping of AerOSegConfig fields")
    # `preset` inside a resolved model config is informational; the top-level preset builds the model.
    model = {k: v for k, v in model.items() if k != "preset"}
    values = {**config.to_dict(), **overrides, "model": {**config.model, **model}}
    return TrainConfig(**values)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def dump_yaml(data: dict[str, Any]) -> str:
    """YAML text of ``data`` (tuples written as lists, keys in the dataclass order)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return yaml.safe_dump(plain(data), sort_keys=False)
