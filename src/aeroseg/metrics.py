"""Segmentation metrics of the paper's protocol (docs/model.md §9, paper §4.3).

One confusion matrix is accumulated over the whole split; the prediction is the argmax over *all*
classes (seen and unseen) and ignore pixels are left out. A labelled pixel that a saved prediction left
without a class (``aeroseg predict``'s nodata id 255) counts as a miss of its true class: one more false
negative of that class and a false positive of none. From it:

- IoU per class = TP / (TP + FP + FN). A class absent from both the predictions and the ground truth of
  the whole split has no defined IoU: it is NaN (``null`` in JSON) and is left out of every mean.
- s-mIoU and u-mIoU: the mean IoU of the seen and of the unseen classes; h-mIoU = 2·s·u / (s + u)
  (NaN when s or u is NaN, 0 when both are 0); mIoU: the mean over all classes (paper Table 8).

All scores are in percent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


class ConfusionMatrix:
    """Counts of (ground truth, prediction) pixel pairs over a whole split.

    ``matrix[t, p]`` is the number of pixels of ground-truth class ``t`` predicted as ``p`` (int64, C×C);
    ``missed[t]`` the pixels of class ``t`` left without a prediction (the ``no_prediction`` id of
    :meth:`update`; int64, C), false negatives of ``t`` only. Matrices of several processes or shards add
    up: ``torch.distributed.all_reduce(cm.matrix)`` (and of ``cm.missed``) or ``cm.merge(other)`` give the
    matrix of the union.
    """

    def __init__(self, num_classes: int, *, ignore_index: int = 255, device: torch.device | str = "cpu"):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.missed = torch.zeros(num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor, *, no_prediction: int | None = None) -> None:
        """Add a batch. ``pred`` and ``target``: integer class ids of the same shape (e.g. B×H×W).

        Pixels whose target is ``ignore_index`` are skipped; predicted ``no_prediction`` ids (a saved
        map's nodata) count in :attr:`missed`; any other id outside ``[0, C)`` in either tensor raises
        ``ValueError``.
        """
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        valid = target != self.ignore_index
        t = target[valid].to(self.matrix.device, torch.int64)
        p = pred[valid].to(self.matrix.device, torch.int64)
        c = self.num_classes
        hole = p == no_prediction if no_prediction is not None and not 0 <= no_prediction < c else None
        for name, ids in (("target", t), ("prediction", p if hole is None else p[~hole])):
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= c):
                bad = ids[(ids < 0) | (ids >= c)][0].item()
                raise ValueError(
                    f"{name} has class id {bad}, outside 0..{c - 1} (ignore={self.ignore_index})"
                )
        if hole is not None:
            self.missed += torch.bincount(t[hole], minlength=c)
            t, p = t[~hole], p[~hole]
        self.matrix += torch.bincount(t * c + p, minlength=c * c).reshape(c, c)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of ``other`` (same number of classes) into this matrix; returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.matrix += other.matrix.to(self.matrix.device)
        self.missed += other.missed.to(self.missed.device)
        return self

    def iou(self) -> torch.Tensor:
        """IoU per class as a fraction (float64, C); NaN for classes absent from prediction and target."""
        m = self.matrix.double()
        tp = m.diagonal()
        union = m.sum(0) + m.sum(1) + self.missed.double() - tp  # TP + FP + FN
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))

    def compute(self, classes: Sequence[str], unseen: Sequence[str]) -> SegmentationScores:
        """Scores of the paper's protocol; ``classes`` in id order, ``unseen`` a subset of them."""
        if len(classes) != self.num_classes:
            raise ValueError(f"{len(classes)} class names for a {self.num_classes}-class matrix")
        unknown = sorted(set(unseen) - set(classes))
        if unknown:
            raise ValueError(f"unseen classes not in the class list: {', '.join(unknown)}")
        iou = (self.iou() * 100).tolist()
        unseen_set = set(unseen)
        seen_iou = [v for name, v in zip(classes, iou, strict=True) if name not in unseen_set]
        unseen_iou = [v for name, v in zip(classes, iou, strict=True) if name in unseen_set]
        s, u = nanmean(seen_iou), nanmean(unseen_iou)
        return SegmentationScores(
            per_class_iou=dict(zip(classes, iou, strict=True)),
            unseen=[name for name in classes if name in unseen_set],
            s_miou=s,
            u_miou=u,
            h_miou=harmonic_mean(s, u),
            miou=nanmean(iou),
        )


def nanmean(values: Sequence[float]) -> float:
    """Mean of the values that are not NaN; NaN when there are none."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def harmonic_mean(s: float, u: float) -> float:
    """h-mIoU = 2·s·u / (s + u); NaN if either is NaN, 0 if both are 0."""
    if math.isnan(s) or math.isnan(u):
        return math.nan
    return 2 * s * u / (s + u) if s + u > 0 else 0.0


def _to_json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _from_json_number(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass
class SegmentationScores:
    """The result of an evaluation, in percent. NaN marks a score that is not defined (see module doc)."""

    per_class_iou: dict[str, float]  # class name -> IoU %, in class-id order
    unseen: list[str] = field(default_factory=list)  # names of the unseen classes
    s_miou: float = math.nan  # mean IoU of the seen classes
    u_miou: float = math.nan  # mean IoU of the unseen classes
    h_miou: float = math.nan  # harmonic mean of s_miou and u_miou
    miou: float = math.nan  # mean IoU of all classes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the fields above, NaN written as ``None``."""
        return {
            "per_class_iou": {k: _to_json_number(v) for k, v in self.per_class_iou.items()},
            "unseen": list(self.unseen),
            "s_miou": _to_json_number(self.s_miou),
            "u_miou": _to_json_number(self.u_miou),
            "h_miou": _to_json_number(self.h_miou),
            "miou": _to_json_number(self.miou),
        }

    def to_json(self, **metadata: Any) -> str:
        """The scores (and any ``metadata`` keys, written first) as a JSON document."""
        return json.dumps({**metadata, **self.to_dict()}, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentationScores:
        """Inverse of :meth:`to_dict`; extra keys (metadata) are ignored."""
        return cls(
            per_class_iou={k: _from_json_number(v) for k, v in data["per_class_iou"].items()},
            unseen=list(data.get("unseen", [])),
            s_miou=_from_json_number(data.get("s_miou")),
            u_miou=_from_json_number(data.get("u_miou")),
            h_miou=_from_json_number(data.get("h_miou")),
            miou=_from_json_number(data.get("miou")),
        )


__all__ = ["ConfusionMatrix", "SegmentationScores", "harmonic_mean", "nanmean"]
