"""The shared mask-classification machinery: matcher, set criterion, point sampling, semantic inference."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from aeroseg.mask_classification import (
    HungarianMatcher,
    MaskPredictions,
    MaskTargets,
    SetCriterion,
    semantic_inference,
    semantic_targets,
    uncertain_point_coords,
)


def random_problem(seed, *, b=2, q=5, t=4, k=3, size=8):
    g = torch.Generator().manual_seed(seed)
    layer = MaskPredictions(
        torch.randn(b, q, t + 1, generator=g), 3 * torch.randn(b, q, size, size, generator=g)
    )
    targets = []
    for _ in range(b):
        labels = torch.randperm(t, generator=g)[:k].sort().values
        masks = (torch.rand(k, 2 * size, 2 * size, generator=g) > 0.5).float()
        targets.append(MaskTargets(labels, masks))
    return layer, targets


def reference_cost(class_logits, mask_logits, target, points):
    """The matching cost written out per pair, with plain BCE and dice on the sampled points."""
    grid = 2 * points[:, :, None] - 1  # 1×P×1×2
    out = F.grid_sample(mask_logits[:, None], grid.expand(len(mask_logits), -1, -1, -1), align_corners=False)
    tgt = F.grid_sample(
        target.masks[:, None], grid.expand(len(target.masks), -1, -1, -1), align_corners=False
    )
    out, tgt = out[:, 0, :, 0], tgt[:, 0, :, 0]
    cost = torch.empty(len(out), len(tgt))
    probs = class_logits.softmax(-1)
    for i, j in itertools.product(range(len(out)), range(len(tgt))):
        bce = F.binary_cross_entropy_with_logits(out[i], tgt[j])
        p = out[i].sigmoid()
        dice = 1 - (2 * (p * tgt[j]).sum() + 1) / (p.sum() + tgt[j].sum() + 1)
        cost[i, j] = 2 * -probs[i, target.labels[j]] + 5 * bce + 5 * dice
    return cost


@pytest.mark.parametrize("seed", range(6))
def test_matcher_finds_the_brute_force_optimum(seed):
    layer, targets = random_problem(seed)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=64)
    indices = matcher(layer, targets, generator=torch.Generator().manual_seed(seed))
    replay = torch.Generator().manual_seed(seed)
    for b, (rows, cols) in enumerate(indices):
        points = torch.rand(1, 64, 2, generator=replay)
        cost = reference_cost(layer.class_logits[b], layer.mask_logits[b], targets[b], points)
        ours = matcher.cost_matrix(layer.class_logits[b], layer.mask_logits[b], targets[b], points)
        torch.testing.assert_close(ours, cost, rtol=1e-5, atol=1e-5)
        best = min(
            sum(cost[q, j] for j, q in enumerate(perm))
            for perm in itertools.permutations(range(cost.shape[0]), 3)
        )
        assert rows.dtype == cols.dtype == torch.int64 and len(rows) == 3
        assert sorted(cols.tolist()) == [0, 1, 2] and rows.tolist() == sorted(rows.tolist())
        assert cost[rows, cols].sum().item() == pytest.approx(best.item(), abs=1e-5)


def test_matcher_with_no_targets_and_the_same_draws():
    layer, targets = random_problem(0)
    targets[0] = MaskTargets(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 16, 16))
    matcher = HungarianMatcher(num_points=32)
    g = torch.Generator().manual_seed(3)
    indices = matcher(layer, targets, generator=g)
    assert [len(r) for r, _ in indices] == [0, 3]
    # one draw of 32 points per image, whether it has targets or not
    replay = torch.Generator().manual_seed(3)
    torch.rand(2, 32, 2, generator=replay)
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=replay))


def test_point_sampling_is_the_global_rng_draw_with_a_generator():
    logits = torch.randn(3, 1, 6, 6)
    torch.manual_seed(11)
    expected = uncertain_point_coords(logits, 20, 3.0, 0.75)
    ours = uncertain_point_coords(logits, 20, 3.0, 0.75, torch.Generator().manual_seed(11))
    assert torch.equal(ours, expected) and ours.shape == (3, 20, 2)
    assert 0 <= ours.min() and ours.max() <= 1


def test_point_sampling_keeps_the_most_uncertain_candidates():
    logits = torch.linspace(-5, 5, 64).view(1, 1, 8, 8)
    points = uncertain_point_coords(logits, 40, 3.0, 1.0, torch.Generator().manual_seed(0))
    values = F.grid_sample(logits, 2 * points[:, :, None] - 1, align_corners=False).abs().flatten()
    g = torch.Generator().manual_seed(0)
    candidates = torch.rand(1, 120, 2, generator=g)
    all_values = F.grid_sample(logits, 2 * candidates[:, :, None] - 1, align_corners=False).abs().flatten()
    assert values.max() <= all_values.sort().values[39] + 1e-6


def test_semantic_targets_one_mask_per_present_class():
    masks = torch.tensor([[[0, 2], [255, 2]], [[255, 255], [255, 255]]])
    first, empty = semantic_targets(masks)
    assert first.labels.tolist() == [0, 2] and first.labels.dtype == torch.int64
    assert first.masks.tolist() == [[[1, 0], [0, 0]], [[0, 1], [0, 1]]]
    assert empty.labels.numel() == 0 and empty.masks.shape == (0, 2, 2)


def test_criterion_parts_weights_and_draw_order():
    layers = [random_problem(s)[0] for s in (1, 2)]
    _, targets = random_problem(1)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=50)
    criterion = SetCriterion(matcher, num_points=40)
    losses = criterion(layers, targets, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {
        "loss",
        "loss_ce",
        "loss_mask",
        "loss_dice",
        "loss_ce_0",
        "loss_mask_0",
        "loss_dice_0",
    }
    weights = criterion.weight_dict(2)
    assert losses["loss"] == pytest.approx(sum(weights[k] * v for k, v in losses.items() if k != "loss"))
    again = criterion(layers, targets, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(losses[k], again[k]) for k in losses)
    # the final layer is matched and sampled first: alone it draws the same points
    alone = criterion(layers[1:], targets, generator=torch.Generator().manual_seed(0))
    assert torch.equal(alone["loss_mask"], losses["loss_mask"])


def test_class_loss_uses_the_no_object_weight():
    layer, targets = random_problem(4)
    criterion = SetCriterion(HungarianMatcher(num_points=16), no_object_weight=0.1, num_points=16)
    indices = criterion.matcher(layer, targets)
    classes = torch.full((2, 5), 4)
    for b, (rows, cols) in enumerate(indices):
        classes[b, rows] = targets[b].labels[cols]
    nll = -layer.class_logits.log_softmax(-1).gather(-1, classes[..., None])[..., 0]
    w = torch.where(classes == 4, 0.1, 1.0)
    expected = (w * nll).sum() / w.sum()
    torch.testing.assert_close(criterion.loss_labels(layer, targets, indices), expected)


def test_good_predictions_lose_less_and_gradients_flow():
    masks = torch.zeros(1, 16, 16, dtype=torch.long)
    masks[0, :, 8:] = 1
    targets = semantic_targets(masks)
    good_masks = torch.full((1, 3, 16, 16), -8.0)
    good_masks[0, 0, :, :8], good_masks[0, 1, :, 8:] = 8.0, 8.0
    good_classes = torch.full((1, 3, 3), -8.0)
    good_classes[0, 0, 0] = good_classes[0, 1, 1] = good_classes[0, 2, 2] = 8.0
    bad = MaskPredictions(
        torch.zeros(1, 3, 3, requires_grad=True), torch.zeros(1, 3, 16, 16, requires_grad=True)
    )
    criterion = SetCriterion(HungarianMatcher(num_points=64), num_points=64)
    good_loss = criterion([MaskPredictions(good_classes, good_masks)], targets)["loss"]
    bad_loss = criterion([bad], targets)["loss"]
    assert good_loss < bad_loss / 3  # (the boundary points, sampled most, stay uncertain)
    bad_loss.backward()
    assert bad.class_logits.grad.abs().sum() > 0 and bad.mask_logits.grad.abs().sum() > 0


def test_semantic_inference_shape_formula_and_class_equivariance():
    g = torch.Generator().manual_seed(0)
    classes, masks = torch.randn(2, 7, 5 + 1, generator=g), torch.randn(2, 7, 6, 4, generator=g)
    scores = semantic_inference(classes, masks)
    assert scores.shape == (2, 5, 6, 4)
    expected = (classes.softmax(-1)[..., :-1, None, None] * masks.sigmoid()[:, :, None]).sum(1)
    torch.testing.assert_close(scores, expected)
    perm = torch.randperm(5, generator=g)
    permuted = semantic_inference(torch.cat([classes[..., perm], classes[..., -1:]], -1), masks)
    torch.testing.assert_close(permuted, scores[:, perm])
    queries = torch.randperm(7, generator=g)
    torch.testing.assert_close(semantic_inference(classes[:, queries], masks[:, queries]), scores)


def test_target_masks_of_different_sizes_are_zero_padded_to_the_largest():
    layer, targets = random_problem(5)
    small = MaskTargets(targets[1].labels, targets[1].masks[:, :12, :10])
    padded = MaskTargets(small.labels, F.pad(small.masks, (0, 6, 0, 4)))
    criterion = SetCriterion(HungarianMatcher(num_points=32), num_points=32)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    indices = criterion.matcher(layer, [targets[0], padded], generator=g())
    args = (layer, [targets[0], small], indices, 6.0)
    expected = criterion.loss_masks(layer, [targets[0], padded], indices, 6.0, g())
    assert all(torch.equal(a, b) for a, b in zip(criterion.loss_masks(*args, g()), expected, strict=True))
