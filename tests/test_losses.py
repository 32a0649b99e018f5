"""Depth and stage-1 losses against their defining properties."""

import torch

from modgs_ns.model.losses import flow3d_loss, knn_smoothness_loss, ordinal_depth_loss, pearson_depth_loss


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_ordinal_zero_when_order_matches_beyond_margin():
    prior = torch.rand(60, 80, generator=_gen()) * 5 + 1
    render = 0.3 * prior + 2.0  # same order; pairs kept differ by >= 0.4 prior units -> >= 0.12 render units
    valid = torch.ones_like(prior, dtype=torch.bool)
    loss = ordinal_depth_loss(render, prior, valid, num_pairs=20000, generator=_gen(1))
    assert float(loss) < 1e-6


def test_ordinal_large_when_order_is_reversed():
    prior = torch.rand(60, 80, generator=_gen()) * 5 + 1
    valid = torch.ones_like(prior, dtype=torch.bool)
    loss = ordinal_depth_loss(-prior, prior, valid, num_pairs=20000, generator=_gen(1))
    assert abs(float(loss) - 2.0) < 1e-4  # |tanh(-big) - 1| = 2 for every kept pair


def test_ordinal_invariant_to_positive_affine_maps_of_the_prior():
    prior = torch.rand(40, 50, generator=_gen(2)) * 3 + 0.5
    render = prior + 0.5 * torch.randn(40, 50, generator=_gen(3))
    valid = torch.rand(40, 50, generator=_gen(4)) > 0.2
    base = ordinal_depth_loss(render, prior, valid, num_pairs=5000, generator=_gen(5))
    for a, b in [(0.01, 0.0), (7.5, -3.0), (1.0, 100.0)]:
        other = ordinal_depth_loss(render, a * prior + b, valid, num_pairs=5000, generator=_gen(5))
        torch.testing.assert_close(other, base, rtol=1e-5, atol=1e-6)
    assert float(base) > 0.01  # the noise does break some orders


def test_ordinal_gradient_fixes_a_wrongly_ordered_pair():
    prior = torch.tensor([[1.0, 2.0]])  # pixel 0 nearer than pixel 1
    render = torch.tensor([[1.51, 1.50]], requires_grad=True)  # rendered the other way round
    valid = torch.ones_like(prior, dtype=torch.bool)
    gap_before = float(render[0, 1] - render[0, 0])
    opt = torch.optim.SGD([render], lr=1e-3)
    for _ in range(20):
        loss = ordinal_depth_loss(render, prior, valid, num_pairs=64, generator=_gen(6))
        opt.zero_grad()
        loss.backward()
        assert render.grad[0, 0] > 0 and render.grad[0, 1] < 0  # push pixel 0 nearer, pixel 1 farther
        opt.step()
    assert float(render[0, 1] - render[0, 0]) > gap_before
    assert float(render[0, 1] - render[0, 0]) > 0  # now in the right order


def test_pearson_is_zero_for_affine_related_depths():
    prior = torch.rand(30, 30, generator=_gen(7))
    valid = torch.ones_like(prior, dtype=torch.bool)
    assert float(pearson_depth_loss(3 * prior + 1, prior, valid)) < 1e-6
    assert abs(float(pearson_depth_loss(-prior, prior, valid)) - 2.0) < 1e-5


def test_flow3d_and_smoothness():
    x = torch.randn(500, 3, generator=_gen(8))
    y = x + 0.1
    assert abs(float(flow3d_loss(y, x, 2.0)) - 0.04) < 1e-6  # ((0.1 * 2)^2)
    # A rigid translation is perfectly smooth; random per-point flow is not.
    assert float(knn_smoothness_loss(x, torch.full_like(x, 0.3), k=8)) < 1e-12
    assert float(knn_smoothness_loss(x, torch.randn(500, 3, generator=_gen(9)), k=8)) > 0.5
