"""The typed configuration of a training run, and how it is resolved from YAML files and flags.

The defaults below are the paper's (Sec. 4.2) or the choices named in ``docs/model.md`` §8. A run is resolved in
this order, later wins: these defaults, the run's saved ``config.yaml`` (when resuming), the ``--config`` file,
then the command-line flags. Model settings (learning rates included) are fields of the preset's config
(:class:`aeroseg.config.AerOSegConfig`, :class:`aeroseg.sed.SEDConfig`, ...) and live under ``model:``; they
are not repeated here. The other families' official schedules (SED, SAN, SCAN: ``configs/<dataset>/*.yaml``)
set the fields after ``rot90``; their defaults keep the AerOSeg runs as they were.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from aeroseg import registry
from aeroseg.errors import UserError
from aeroseg.training.optimizer import SCHEDULES

PRECISIONS = ("fp32", "bf16", "fp16")
_TYPES = {
    "str": str,
    "int": int,
    "float": (int, float),
    "bool": bool,
    "dict[str, Any]": dict,
    "list[int]": list,
}


@dataclass
class TrainConfig:
    """Configuration of ``aeroseg train``; ``configs/default.yaml`` lists the same defaults."""

    data: str | None = None  # prepared dataset directory (DIR/dataset.yaml, DIR/train/...)
    out: str | None = None  # run directory: config.yaml, metrics.csv, tensorboard/, checkpoints/, final/
    preset: str = "aeroseg"  # model preset (`aeroseg presets`)
    pretrained: bool = True  # load the pretrained CLIP and guidance weights (False: random, for smoke tests)
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's config (clip, lr, ...)

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
    # the official schedules of SED, SAN and SCAN (detectron2 keys; configs/<dataset>/{sed,san,scan}.yaml)
    lr_schedule: str = "cosine"  # cosine (WarmupCosineLR) | poly (WarmupPolyLR: SAN, SCAN)
    poly_power: float = 0.9  # SOLVER.POLY_LR_POWER of the poly schedule
    warmup_factor: float | None = None  # None: linear warm-up from 1/warmup_steps, then the decay (ours);
    #   a number: detectron2's warm-up from this factor times the decay (SOLVER.WARMUP_FACTOR; SCAN 1e-6)
    min_size_train: list[int] | None = (
        None  # shorter sides drawn per image before the crop (INPUT.MIN_SIZE_TRAIN,
    )
    #   "choice"; SAN 320..960, SCAN 320..1280 by 64); None: the crop size, as CAT-Seg's
    max_size_train: int = 1333  # the longer side at most after that resize (INPUT.MAX_SIZE_TRAIN; SED 2666)
    size_divisibility: int = 0  # >0: crops padded at the end of the augmentation, bottom and right, to a
    #   multiple of it (INPUT.SIZE_DIVISIBILITY: image 128, labels ignored; SAN, SCAN 640, SED 768);
    #   0: padded to the crop size right after cropping (the AerOSeg runs)

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
        self._validate_schedule()
        if not self.data:
            raise UserError("no dataset: pass --data DIR (a directory made by `aeroseg prepare`)")
        if not self.out:
            raise UserError("no run directory: pass -o/--output RUN")
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
        config = registry.preset(self.preset).config()  # a one-line UserError for an unknown preset
        unknown = sorted(set(self.model) - {f.name for f in fields(config)})
        if unknown:
            raise UserError(
                f"unknown model setting(s) {', '.join(unknown)} of preset {self.preset}; the names are the "
                f"fields of {type(config).__name__} ({type(config).__module__})"
            )

    def _validate_schedule(self) -> None:
        if self.lr_schedule not in SCHEDULES:
            raise UserError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        if self.poly_power <= 0 or (self.warmup_factor is not None and not 0 <= self.warmup_factor <= 1):
            raise UserError("poly_power must be > 0 and warmup_factor in [0, 1]")
        sizes = self.min_size_train
        if sizes is not None and (
            not sizes or any(isinstance(v, bool) or not isinstance(v, int) or v < 8 for v in sizes)
        ):
            raise UserError(f"min_size_train must be a list of whole numbers >= 8, got {sizes!r}")
        if self.max_size_train < max(sizes or [8]):
            raise UserError(
                f"max_size_train {self.max_size_train} is below min_size_train {max(sizes or [8])}"
            )
        if self.size_divisibility < 0:
            raise UserError(f"size_divisibility must be >= 0, got {self.size_divisibility}")
        if self.size_divisibility and self.crop_size and self.size_divisibility < self.crop_size:
            raise UserError(
                f"size_divisibility {self.size_divisibility} must be 0 or at least crop_size {self.crop_size} "
                "(every crop is padded to it, so that a batch stacks)"
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
        raise UserError(f"{source}: 'model' must be a mapping of fields of the preset's config")
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
