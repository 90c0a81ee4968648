import json
import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from aeroseg.metrics import ConfusionMatrix, SegmentationScores, harmonic_mean, nanmean


def _random_batch(seed: int, num_classes: int, shape=(3, 17, 19), ignore_fraction=0.2):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, shape, generator=g)
    target[torch.rand(shape, generator=g) < ignore_fraction] = 255
    pred = torch.randint(0, num_classes, shape, generator=g)
    return pred, target


def test_hand_computed_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 255], [2, 2, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 2], [2, 0, 1, 2]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    # rows: ground truth, columns: prediction; the (255 -> 2) pixel is not counted
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert cm.matrix.dtype == torch.int64
    # class 0: TP 1, FP 1, FN 1 -> 1/3; class 1: 2 / (2 + 1 + 1); class 2: 1 / (1 + 1 + 1)
    assert cm.iou().tolist() == pytest.approx([1 / 3, 1 / 2, 1 / 3])


def test_matches_torchmetrics_jaccard_over_several_batches():
    num_classes = 7
    cm = ConfusionMatrix(num_classes)
    reference = MulticlassJaccardIndex(num_classes, ignore_index=255, average="none")
    for seed in range(4):
        pred, target = _random_batch(seed, num_classes)
        cm.update(pred, target)
        reference.update(pred, target)
    assert torch.allclose(cm.iou().float(), reference.compute(), atol=1e-6)


def test_split_matrices_add_up_to_the_whole():
    batches = [_random_batch(seed, 5) for seed in range(3)]
    whole, parts = ConfusionMatrix(5), [ConfusionMatrix(5) for _ in batches]
    for part, (pred, target) in zip(parts, batches, strict=True):
        whole.update(pred, target)
        part.update(pred, target)
    merged = ConfusionMatrix(5)
    for part in parts:
        merged.merge(part)
    assert torch.equal(merged.matrix, whole.matrix)
    assert torch.equal(sum(p.matrix for p in parts), whole.matrix)  # what all_reduce(SUM) computes


def test_paper_h_miou():
    assert round(harmonic_mean(75.48, 51.46), 2) == 61.20
    assert round(harmonic_mean(60.37, 39.12), 2) == 47.48
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(50.0, math.nan))


def test_scores_seen_unseen_and_absent_class():
    # classes a, b seen; c, d unseen; d never occurs in prediction or ground truth
    target = torch.tensor([0, 0, 1, 1, 2, 2, 255])
    pred = torch.tensor([0, 0, 1, 2, 2, 0, 3])
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    scores = cm.compute(["a", "b", "c", "d"], unseen=["d", "c"])
    # a: 2/(2+1+0)=2/3, b: 1/(1+0+1)=1/2, c: 1/(1+1+1)=1/3, d: NaN (left out)
    assert scores.per_class_iou["a"] == pytest.approx(200 / 3)
    assert scores.per_class_iou["b"] == pytest.approx(50.0)
    assert scores.per_class_iou["c"] == pytest.approx(100 / 3)
    assert math.isnan(scores.per_class_iou["d"])
    assert scores.unseen == ["c", "d"]  # id order
    assert scores.s_miou == pytest.approx((200 / 3 + 50) / 2)
    assert scores.u_miou == pytest.approx(100 / 3)
    assert scores.h_miou == pytest.approx(harmonic_mean(scores.s_miou, scores.u_miou))
    assert scores.miou == pytest.approx((200 / 3 + 50 + 100 / 3) / 3)


def test_json_round_trip_writes_null_for_nan():
    scores = SegmentationScores({"a": 50.0, "b": math.nan}, unseen=["b"], s_miou=50.0, miou=50.0)
    data = json.loads(scores.to_json(dataset="toy"))
    assert data["dataset"] == "toy"
    assert data["per_class_iou"] == {"a": 50.0, "b": None}
    assert data["u_miou"] is None and data["h_miou"] is None
    back = SegmentationScores.from_dict(data)
    assert back.per_class_iou["a"] == 50.0 and math.isnan(back.per_class_iou["b"])
    assert back.s_miou == 50.0 and math.isnan(back.u_miou)


@pytest.mark.parametrize("seed", range(8))
def test_permuting_class_ids_permutes_per_class_iou(seed):
    num_classes = 6
    pred, target = _random_batch(seed, num_classes, shape=(2, 9, 11))
    pred[0, 0, :] = 0  # make some classes rare so that NaN / 0 IoUs are exercised across seeds
    g = torch.Generator().manual_seed(100 + seed)
    perm = torch.randperm(num_classes, generator=g)  # class i is renamed perm[i]
    lut = torch.cat([perm, torch.zeros(256 - num_classes, dtype=torch.long)])
    lut[255] = 255
    cm, permuted = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    cm.update(pred, target)
    permuted.update(lut[pred], lut[target])
    expected = torch.empty(num_classes, dtype=torch.float64)
    expected[perm] = cm.iou()
    assert torch.allclose(permuted.iou(), expected, equal_nan=True)
    names = [f"c{i}" for i in range(num_classes)]
    renamed = [None] * num_classes
    for i, p in enumerate(perm.tolist()):
        renamed[p] = names[i]
    a = cm.compute(names, unseen=names[:2])
    b = permuted.compute(renamed, unseen=names[:2])
    for name in names:
        assert a.per_class_iou[name] == pytest.approx(b.per_class_iou[name], nan_ok=True)
    assert (a.s_miou, a.u_miou, a.h_miou, a.miou) == pytest.approx((b.s_miou, b.u_miou, b.h_miou, b.miou))


def test_bad_inputs_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="class id 3"):
        cm.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="target has class id 7"):
        cm.update(torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="unseen"):
        cm.compute(["a", "b", "c"], unseen=["z"])
    with pytest.raises(ValueError, match="merge"):
        cm.merge(ConfusionMatrix(4))
    assert nanmean([math.nan]) != nanmean([math.nan])  # NaN when nothing is left


def test_no_prediction_is_a_miss_of_the_true_class_only():
    cm = ConfusionMatrix(3)
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 255, 1, 255, 2, 255])  # two labelled pixels left without a class
    cm.update(pred, target, no_prediction=255)
    assert cm.matrix.diagonal().tolist() == [1, 1, 1] and cm.matrix.sum() == 3
    assert cm.missed.tolist() == [1, 1, 0]
    assert cm.iou().tolist() == [0.5, 0.5, 1.0]  # TP / (TP + FN): no class gets a false positive
    other = ConfusionMatrix(3)
    other.update(torch.tensor([255]), torch.tensor([2]), no_prediction=255)
    assert cm.merge(other).missed.tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="class id 255"):
        ConfusionMatrix(3).update(pred, target)  # without no_prediction, 255 is an unknown id
