"""Score a model or a folder of class-id maps on a canonical dataset split (protocol: ``aeroseg.metrics``).

The model is asked for *all* dataset classes (seen and unseen) in id order, so channel ``t`` of its
output is class id ``t`` and the argmax over channels is the predicted id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from aeroseg.data import SegmentationDataset, read_mask
from aeroseg.data.dataset import single_line_errors
from aeroseg.errors import UserError
from aeroseg.inference import reference_scores, sliding_window_scores
from aeroseg.metrics import ConfusionMatrix
from aeroseg.precision import autocast
from aeroseg.progress import progress as tqdm

Mode = Literal["reference", "whole", "slide"]


def _same_size_groups(samples: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive runs of samples whose images have the same H×W (they stack into one batch)."""
    group: list[dict[str, Any]] = []
    for sample in samples:
        if group and sample["image"].shape != group[0]["image"].shape:
            yield group
            group = []
        group.append(sample)
    if group:
        yield group


def _update(cm: ConfusionMatrix, pred: torch.Tensor, mask: torch.Tensor, stem: str) -> None:
    try:
        cm.update(pred, mask)
    except ValueError as error:
        raise UserError(f"image {stem!r}: {error}") from None


@torch.inference_mode()
def score_model(
    model: Any,
    dataset: SegmentationDataset,
    *,
    mode: Mode = "reference",
    window: int = 512,
    overlap: float = 0.25,
    batch_size: int = 1,
    workers: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    progress: bool = True,
) -> ConfusionMatrix:
    """Confusion matrix of ``model`` over ``dataset`` .

    ``mode="reference"`` (the paper's protocol): the model's own ``reference_probabilities(image, classes)``
    where its family has one (its official evaluation), else CAT-Seg's ``inference_sliding_window``,
    :func:`aeroseg.inference.reference_scores` per image (640² resize, four 384-px windows and a global view).
    ``mode="whole"``: ``model.probabilities(model.encode(images), classes)`` on batches of up to
    ``batch_size`` same-size images (B×3×H×W in [0, 1] -> B×T×H×W). ``mode="slide"``:
    :func:`aeroseg.inference.sliding_window_scores` per image with ``window``, ``overlap`` and ``batch_size``
    windows per forward. The model must already be on ``device`` and in eval mode. Its forwards run under
    :func:`aeroseg.precision.autocast` of ``precision`` ("fp32", "bf16" or "fp16").
    """
    info = dataset.info
    classes = list(info.classes)
    cm = ConfusionMatrix(len(classes), ignore_index=info.ignore_index, device=device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size if mode == "whole" else 1,
        num_workers=workers,
        collate_fn=list,
    )
    with (
        tqdm(total=len(dataset), desc="evaluate", unit="img", disable=not progress) as bar,
        autocast(device, precision),
    ):
        for samples in single_line_errors(loader):
            if mode in ("slide", "reference"):
                sample = samples[0]
                image = sample["image"].to(device)
                if mode == "slide":
                    scores = sliding_window_scores(
                        model, image, classes, window=window, overlap=overlap, batch_size=batch_size
                    )  # T×H×W
                elif hasattr(model, "reference_probabilities"):  # the family's own evaluation protocol
                    scores = model.reference_probabilities(image, classes)  # T×H×W
                else:
                    scores = reference_scores(model, image, classes)  # T×H×W
                _update(cm, scores.argmax(0), sample["mask"].to(device), sample["stem"])
            else:
                for group in _same_size_groups(samples):
                    images = torch.stack([s["image"] for s in group]).to(device)  # B×3×H×W
                    with torch.inference_mode():
                        probs = model.probabilities(model.encode(images), classes)  # B×T×H×W
                    expected = (len(group), len(classes), *images.shape[-2:])
                    if tuple(probs.shape) != expected:
                        raise RuntimeError(f"model returned {tuple(probs.shape)}, expected {expected}")
                    for s, pred in zip(group, probs.argmax(1), strict=True):
                        _update(cm, pred, s["mask"].to(device), s["stem"])
            bar.update(len(samples))
    return cm


NO_PREDICTION = 255  # the nodata id of the class rasters of ``aeroseg predict``: no class predicted
PREDICTION_SUFFIXES = (".png", ".tif", ".tiff")  # what other models write, and what aeroseg predict writes


def read_prediction(path: Path) -> torch.Tensor:
    """A single-channel PNG (mode L, P or I) or TIFF / GeoTIFF (band 1) of class ids as a long H×W tensor."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as ds:
            if ds.count != 1 or ds.dtypes[0] not in ("uint8", "uint16", "int16", "int32"):
                raise UserError(
                    f"prediction {path} has {ds.count} {ds.dtypes[0]} band(s); write one band of class ids"
                )
            return torch.from_numpy(ds.read(1).astype(np.int64))
    with Image.open(path) as image:
        if image.mode not in ("L", "P", "I", "I;16"):
            raise UserError(
                f"prediction {path} is a {image.mode} image; write one channel of class ids (mode L)"
            )
        return torch.from_numpy(np.array(image).astype(np.int64))


def score_predictions(
    dataset: SegmentationDataset, predictions: Path, *, progress: bool = True
) -> ConfusionMatrix:
    """Confusion matrix of the maps ``predictions/<stem>.png`` (or ``.tif``) against the masks of ``dataset``.

    Only the masks are read (``dataset.files``), not the images. Every stem of the split needs a
    prediction of the mask's size; extra files are ignored. Predicted ids at ignore pixels are not read.
    A labelled pixel predicted :data:`NO_PREDICTION` (255, the nodata id of ``aeroseg predict``) counts as
    a miss of its true class (see :mod:`aeroseg.metrics`).
    """
    predictions = Path(predictions)
    if not predictions.is_dir():
        raise UserError(f"predictions folder {predictions} does not exist")
    info = dataset.info
    cm = ConfusionMatrix(len(info.classes), ignore_index=info.ignore_index)
    for image_path, mask_path in tqdm(dataset.files, desc="evaluate", unit="img", disable=not progress):
        stem, mask = image_path.stem, read_mask(mask_path)
        found = [predictions / f"{stem}{suffix}" for suffix in PREDICTION_SUFFIXES]
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            raise UserError(f"no prediction for image {stem!r}: expected {found[0]} or {found[1].name}")
        pred = read_prediction(path)
        if pred.shape != mask.shape:
            size, want = "×".join(map(str, pred.shape)), "×".join(map(str, mask.shape))
            raise UserError(f"prediction {path} is {size} but the mask of {stem!r} is {want} (H×W)")
        try:
            cm.update(pred, mask, no_prediction=NO_PREDICTION)
        except ValueError as error:
            raise UserError(f"image {stem!r} with prediction {path}: {error}") from None
    return cm


__all__ = ["Mode", "read_prediction", "score_model", "score_predictions"]
