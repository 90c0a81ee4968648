"""SED's components one by one: shapes, the laws they keep, and linear attention against its definition."""

import torch
import torch.nn.functional as F

from aeroseg.sed.cost_map import CostMap
from aeroseg.sed.early_rejection import CategoryEarlyRejection
from aeroseg.sed.feature_aggregation import ClassFusion, FeatureAggregation, linear_attention
from aeroseg.sed.gradual_fusion_decoder import GradualFusionDecoder
from aeroseg.sed.skip_layer_fusion import SkipLayerFusion

torch.manual_seed(0)


def test_linear_attention_is_its_definition():
    q, k, v = (torch.randn(2, 5, 3, 4) for _ in range(3))
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    weights = torch.einsum("nlhd,nshd->nhls", phi_q, phi_k)
    expected = torch.einsum("nhls,nshd->nlhd", weights / weights.sum(-1, keepdim=True), v)
    torch.testing.assert_close(linear_attention(q, k, v), expected, rtol=1e-4, atol=1e-5)


def test_cost_map_is_the_cosine_similarity():
    dense, text = torch.randn(2, 8, 6, 6), F.normalize(torch.randn(5, 3, 8), dim=-1)
    cost, embedded = CostMap(num_templates=3, hidden_dim=16)(dense, text)
    assert cost.shape == (2, 3, 5, 6, 6) and embedded.shape == (2, 16, 5, 6, 6)
    torch.testing.assert_close(cost[1, 2, 4, 3, 1], F.cosine_similarity(dense[1, :, 3, 1], text[4, 2], dim=0))


def test_class_fusion_is_permutation_equivariant_over_classes_and_pools_only_in_training():
    fusion = ClassFusion(16, num_heads=4, pool=(2, 2), pool_eval=(1, 1))
    x = torch.randn(2, 16, 7, 8, 8)
    order = torch.randperm(7)
    for mode in (True, False):
        fusion.train(mode)
        torch.testing.assert_close(fusion(x)[:, :, order], fusion(x[:, :, order]), rtol=1e-4, atol=1e-5)
    unpooled = ClassFusion(16, num_heads=4, pool=(1, 1), pool_eval=(1, 1))
    unpooled.load_state_dict(fusion.state_dict())
    torch.testing.assert_close(fusion.eval()(x), unpooled.train()(x), rtol=0, atol=0)
    assert not torch.allclose(fusion.train()(x), unpooled(x), atol=1e-3)


def test_feature_aggregation_and_skip_layer_fusion_shapes():
    aggregation = FeatureAggregation(32, kernel_size=9, num_heads=4, pool=(2, 2), pool_eval=(1, 1))
    x = torch.randn(2 * 5, 32, 6, 6)
    assert aggregation(x, 2).shape == x.shape
    fusion = SkipLayerFusion(in_dim=32, out_dim=16, skip_dim=8)
    out = fusion(x, torch.randn(2, 8, 12, 12), torch.randn(10, 8, 12, 12))
    assert out.shape == (10, 16, 12, 12)


def test_rejection_keeps_the_classes_that_win_a_pixel():
    scores = torch.full((1, 4, 2, 2), -1.0)
    scores[0, 2, 0, 0] = scores[0, 0, 1, 1] = 5.0
    assert CategoryEarlyRejection.kept(scores, 1).tolist() == [True, False, True, False]
    assert CategoryEarlyRejection.kept(scores, 10).all()


def test_decoder_upsamples_eight_times_and_rejecting_with_every_class_kept_is_the_full_decoder():
    decoder = GradualFusionDecoder(
        hidden_dim=32, dims=(32, 16, 16), encoder_dims=(24, 16, 8), skip_dims=(8, 8, 4), cost_dims=(3, 8, 8),
        kernel_sizes=(9, 9, 9), num_heads=4, pool=(2, 2), pool_eval=(1, 1),
    ).eval()  # fmt: skip
    levels = [torch.randn(1, c, 4 * s, 4 * s) for c, s in ((8, 8), (16, 4), (24, 2), (40, 1))]
    skips = decoder.project_skips(levels)
    assert [tuple(s.shape) for s in skips] == [(1, 8, 8, 8), (1, 8, 16, 16), (1, 4, 32, 32)]
    embedded, cost = torch.randn(1, 32, 5, 4, 4), torch.randn(1, 3, 5, 4, 4)
    with torch.no_grad():
        logits, scores = decoder(embedded, cost, skips)
        kept, index = decoder.forward_rejecting(embedded, cost, skips, topk=5)
    assert logits.shape == (1, 5, 32, 32) and [s.shape[-1] for s in scores] == [4, 8, 16]
    assert index.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(kept, logits, rtol=1e-5, atol=1e-6)
