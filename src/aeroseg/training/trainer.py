"""The training loop: AdamW over the model's parameter groups, cosine (or poly) decay, one optimizer step per
global batch, for every family that trains (AerOSeg and its presets, SED, SAN, SCAN).

Reading order of one step (docs/model.md §8): a global batch of augmented crops whose masks index the seen classes
(unseen pixels 255) -> ``forward_train`` on the seen class names -> the family's criterion (AerOSeg: BCE + lambda *
L_bp; ``registry.criterion``) -> backward (DDP averages the gradients of the ranks) -> gradient-norm clip -> AdamW
-> the lr schedule.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from aeroseg import registry
from aeroseg.atomic import atomic_dir, write_text
from aeroseg.data import SegmentationDataset
from aeroseg.data.dataset import single_line_errors
from aeroseg.data.transforms import training_transforms
from aeroseg.errors import CheckpointError, UserError
from aeroseg.evaluation.scoring import score_model
from aeroseg.precision import autocast
from aeroseg.progress import progress as tqdm
from aeroseg.training import checkpointing, distributed
from aeroseg.training.distributed import Distributed
from aeroseg.training.optimizer import lr_factor, optimizer_groups
from aeroseg.training.run_log import EVAL_COLUMNS, RunLog
from aeroseg.training.stream import StepSampler, TrainingStream
from aeroseg.training.train_config import TrainConfig, dump_yaml


class _ForwardTrain(nn.Module):
    """Routes ``forward_train`` through ``DistributedDataParallel.__call__``, which only wraps ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, classes: list[str]) -> Any:
        return self.model.forward_train(images, classes)


class Trainer:
    """One training run of ``cfg`` in this process (one of ``dist.world_size`` DDP processes)."""

    def __init__(self, cfg: TrainConfig, dist: Distributed, resume: str | None = None) -> None:
        cfg.validate()
        if cfg.batch_size % dist.world_size:
            raise UserError(
                f"--batch-size {cfg.batch_size} (global) must be a multiple of the {dist.world_size} processes"
            )
        self.cfg, self.dist, self.device = cfg, dist, dist.device
        self.run_dir = Path(cfg.out)
        checkpoint = checkpointing.find_checkpoint(self.run_dir, resume) if resume else None
        if checkpoint is None and (self.run_dir / "config.yaml").exists():
            raise UserError(
                f"{self.run_dir} holds a previous run: pass --resume to continue it, or another -o/--output"
            )

        self.dataset = SegmentationDataset(cfg.data, split="train")
        self.classes = list(self.dataset.info.seen)
        if not self.classes:
            raise UserError(f"{cfg.data}/dataset.yaml names no seen classes to train on")
        self.val_set = SegmentationDataset(cfg.data, split="val") if cfg.eval_every else None

        if self.device.type == "cuda" and cfg.precision == "fp32":
            torch.set_float32_matmul_precision("high")  # TF32 matmuls, as CAT-Seg's train_net.py main()
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        family = registry.preset(cfg.preset).family
        if not family.trains or family.criterion is None:
            raise UserError(
                f"preset {cfg.preset!r} ({family.name}) does not train: it has no trainable part; "
                "evaluate or predict with it directly"
            )
        self.model = self._load_model(checkpoint) if checkpoint else self._build_model()
        self.model.to(self.device).train()
        self.loss_fn = registry.criterion(
            family, self.model.config, ignore_index=self.dataset.info.ignore_index
        )

        # new modules, CLIP q/v, guidance; each split by weight decay (none on norm layers, CAT-Seg train_net.py)
        groups = optimizer_groups(self.model, cfg.weight_decay)
        self.params = [p for group in groups for p in group["params"]]  # the whole model's, clipped together
        self.optimizer = torch.optim.AdamW(groups, fused=self.device.type == "cuda")
        factor = functools.partial(
            lr_factor,
            schedule=cfg.lr_schedule,
            steps=cfg.steps,
            warmup_steps=cfg.warmup_steps,
            warmup_factor=cfg.warmup_factor,
            min_lr_ratio=cfg.min_lr_ratio,
            power=cfg.poly_power,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.step, self.elapsed = 0, 0.0
        if checkpoint:
            self._restore(checkpointing.load_training_state(checkpoint))

        forward = _ForwardTrain(self.model)
        self.forward = DistributedDataParallel(forward) if dist.world_size > 1 else forward

    def _build_model(self) -> Any:
        overrides = dict(self.cfg.model)
        config = registry.preset_config(self.cfg.preset)
        if hasattr(config, "back_projection_classes"):  # AerOSeg: the back-projection sees the seen classes
            overrides["back_projection_classes"] = len(self.classes)
        return registry.build(self.cfg.preset, pretrained=self.cfg.pretrained, **overrides)

    def _load_model(self, checkpoint: Path) -> Any:
        model = registry.load(checkpoint)
        try:
            saved, wanted = model.config.to_dict(), model.config.replace(**self.cfg.model).to_dict()
        except ValueError as error:
            raise UserError(f"model settings: {error}") from None
        changed = sorted(k for k in saved if wanted[k] != saved[k])
        if changed:
            raise UserError(
                f"cannot change model settings when resuming ({', '.join(changed)}); start a new run"
            )
        return model

    def _restore(self, state: dict[str, Any]) -> None:
        if (state["batch_size"], state["seed"]) != (self.cfg.batch_size, self.cfg.seed):
            raise CheckpointError("resume with the run's --batch-size and --seed, which fix the data order")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.elapsed = state["step"], state["elapsed"]
        rng = state["rng"]
        if len(rng) == self.dist.world_size:
            checkpointing.set_rng_state(rng[self.dist.rank], self.device)
        elif self.dist.is_main:
            print(
                f"aeroseg train: saved with {len(rng)} processes, resumed with {self.dist.world_size}: "
                "random streams restart (the data order does not change)"
            )

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs (gathered from every rank)."""
        return {
            "step": self.step,
            "position": self.step * self.cfg.batch_size,  # next sample of the data stream
            "batch_size": self.cfg.batch_size,
            "seed": self.cfg.seed,
            "elapsed": self.elapsed,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": self.dist.all_gather(checkpointing.rng_state(self.device)),
        }

    def _loader(self) -> DataLoader:
        crop = self.cfg.crop_size or getattr(self.model.config, "clip_image_size", None)
        if crop is None:
            raise UserError(
                f"preset {self.cfg.preset!r}: set crop_size in the training config (no default crop)"
            )
        if 0 < self.cfg.size_divisibility < crop:
            raise UserError(
                f"size_divisibility {self.cfg.size_divisibility} must be 0 or at least the crop side {crop}"
            )
        info = self.dataset.info
        transform = training_transforms(
            crop,
            info.unseen_ids,
            ignore_index=info.ignore_index,
            max_category_area=self.cfg.crop_max_category_area,
            color_jitter=self.cfg.color_jitter,
            rotate=self.cfg.rot90,
            min_sizes=self.cfg.min_size_train,
            max_size=self.cfg.max_size_train,
            size_divisibility=self.cfg.size_divisibility,
        )
        stream = TrainingStream(self.dataset, info, seed=self.cfg.seed, transform=transform)
        sampler = StepSampler(
            start_step=self.step,
            steps=self.cfg.steps,
            batch_size=self.cfg.batch_size,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        return DataLoader(
            stream,
            batch_size=sampler.local_batch,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            # its own generator: the loader's worker base seed would otherwise be a draw from the global RNG,
            # shifting the model's random stream by one draw at each (re)start
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def train_step(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimizer step on this rank's share of a global batch; returns the detached losses."""
        images = images.to(self.device, non_blocking=True)
        masks = masks.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.precision):
            losses = self.loss_fn(self.forward(images, self.classes), masks)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        values = {"loss": losses["loss"], **losses, "grad_norm": grad_norm}  # "loss" first in the log
        return {k: v.detach().float() for k, v in values.items()}

    def evaluate(self) -> dict[str, float]:
        """Validation s-, u-, h-mIoU and mIoU (%) over all classes; each rank scores a share of the images."""
        shard = copy.copy(self.val_set)
        shard.files = self.val_set.files[self.dist.rank :: self.dist.world_size]
        self.model.eval()
        # the reference protocol (CAT-Seg inference_sliding_window), as `aeroseg evaluate` by default
        matrix = score_model(self.model, shard, mode="reference", device=self.device, progress=False)
        self.model.train()
        if self.dist.world_size > 1:
            torch.distributed.all_reduce(matrix.matrix)
        scores = matrix.compute(self.val_set.info.classes, self.val_set.info.unseen)
        return {name: getattr(scores, name) for name in EVAL_COLUMNS}

    def _mean_over_ranks(self, values: dict[str, torch.Tensor]) -> dict[str, float]:
        stacked = torch.stack(list(values.values()))
        if self.dist.world_size > 1:
            torch.distributed.all_reduce(stacked)
            stacked /= self.dist.world_size
        return dict(zip(values, stacked.tolist(), strict=True))

    def fit(self) -> Path:
        """Train to ``cfg.steps``; write checkpoints and ``RUN/final``; return the final model's folder."""
        cfg, main = self.cfg, self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            resolved = {**cfg.to_dict(), "model": self.model.config.to_dict()}
            write_text(self.run_dir / "config.yaml", dump_yaml(resolved))
        log = RunLog(self.run_dir, start_step=self.step) if main else None
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=cfg.quiet or not main,
            dynamic_ncols=True,
        )
        started = time.perf_counter() - self.elapsed
        try:
            for images, masks in single_line_errors(self._loader()):
                values = self._mean_over_ranks(self.train_step(images, masks))
                self.step += 1
                self.elapsed = time.perf_counter() - started
                lrs = {
                    f"lr_{group['name']}": group["lr"] for group in self.optimizer.param_groups
                }  # one per name
                if log is not None:
                    log.write(self.step, {**values, **lrs}, self.elapsed)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{next(iter(lrs.values())):.2e}")
                    bar.update()
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                    scores = self.evaluate()
                    if log is not None:
                        log.write_eval(self.step, scores)
                    if main and not cfg.quiet:
                        bar.write(
                            f"step {self.step}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
                        )
                if cfg.save_every and (self.step % cfg.save_every == 0 or self.step == cfg.steps):
                    self._save_checkpoint()
        finally:
            bar.close()
            if log is not None:
                log.close()
        final = self.run_dir / "final"
        if main:
            with atomic_dir(final, replace=True) as tmp:
                self.model.save_pretrained(tmp)
        self.dist.barrier()
        return final

    def _save_checkpoint(self) -> None:
        state = self.state_dict()  # collective: every rank takes part
        if self.dist.is_main:
            checkpointing.save_checkpoint(
                self.model, state, self.run_dir, self.step, self.cfg.keep_checkpoints
            )


def train(cfg: TrainConfig, resume: str | None = None) -> Path:
    """Run ``cfg`` in this process (joining the DDP group when launched by ``torchrun``)."""
    dist = distributed.setup(cfg.device)
    try:
        return Trainer(cfg, dist, resume).fit()
    finally:
        distributed.teardown()
