"""Pair explanations: conservation per target, Siamese stacking, BiLRP, second order, baselines."""
from __future__ import annotations

import pytest
import torch

from lrprec.explain import METHODS, attribute, bilrp, explain_pairs, grid_pool, top_links
from lrprec.explain.bilrp import marginals
from lrprec.model.backbones import FeatureBackbone, SmallCNN
from lrprec.model.pair import PairModel

CH = (4, 8, 8, 16)
N_REL = 4


def _model(bias: bool = False, batchnorm: bool = False, dim: int = 6, seed: int = 0) -> PairModel:
    torch.manual_seed(seed)
    bb = SmallCNN(channels=CH, out_dim=24, bias=bias, batchnorm=batchnorm)
    model = PairModel(bb, dim=dim, n_relations=N_REL, n_users=3, seed=seed)
    with torch.no_grad():
        model.theta_delta.normal_(0, 0.3)  # users differ from the global θ
        model.c.fill_(0.7)
        for m in bb.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics and shifts to fold
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.3, 0.3)
    return model


def _pairs(n: int = 4, size: int = 32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x_a = torch.randn(n, 3, size, size, generator=g)
    x_b = torch.randn(n, 3, size, size, generator=g)
    rel = torch.arange(n) % N_REL
    user = torch.tensor([-1, 0, 1, 2] * n)[:n]
    return x_a, x_b, rel, user


def _sums(e) -> tuple[torch.Tensor, torch.Tensor]:
    return e.relevance_a.flatten(1).sum(1), e.relevance_b.flatten(1).sum(1)


@pytest.mark.parametrize("composite", ["lrp0", "epsilon"])
@pytest.mark.parametrize("target", ["similarity", "distance", "logit"])
def test_conservation_on_bias_free_backbone(composite: str, target: str) -> None:
    model = _model()
    x_a, x_b, rel, user = _pairs()
    e = explain_pairs(model, x_a, x_b, rel, user, target=target, composite=composite)
    sa, sb = _sums(e)
    with torch.no_grad():
        logit = model(x_a, x_b, rel, user)
    torch.testing.assert_close(e.logit, logit, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(e.probability, torch.sigmoid(logit))
    torch.testing.assert_close(e.relevance_sum_a, sa)
    torch.testing.assert_close(e.relevance_sum_b, sb)
    torch.testing.assert_close(e.conservation, torch.ones_like(e.conservation), rtol=0, atol=1e-2)
    if target == "similarity":  # each image explains the whole similarity given the other
        torch.testing.assert_close(sa, e.target_value, rtol=1e-2, atol=0)
        torch.testing.assert_close(sb, e.target_value, rtol=1e-2, atol=0)
        torch.testing.assert_close(e.absorbed, e.target_value - (sa + sb) / 2)
    elif target == "distance":  # W = [E; −E] splits d between the images
        with torch.no_grad():
            a_i, a_j = model.pair_embeddings(x_a, x_b, rel)
            d = model.distance(a_i, a_j, model.theta(rel, user))
        torch.testing.assert_close(e.target_value, d, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(sa + sb, d, rtol=1e-2, atol=0)
    else:  # c is the output's bias: it keeps its share, only −d reaches the images
        c = model.c[rel].detach()
        torch.testing.assert_close(sa + sb, logit - c, rtol=1e-2, atol=0)
        torch.testing.assert_close(e.absorbed, e.target_value - (sa + sb))
        torch.testing.assert_close(e.absorbed, c, rtol=1e-3, atol=1e-6)


def test_absorbed_share_is_reported_with_biases() -> None:
    model = _model(bias=True, batchnorm=True)
    x_a, x_b, rel, user = _pairs()
    e = explain_pairs(model, x_a, x_b, rel, user, target="distance", composite="epsilon")
    sa, sb = _sums(e)
    torch.testing.assert_close(e.absorbed, e.target_value - (sa + sb))
    assert e.absorbed.abs().max() > 1e-3 * e.target_value.abs().max()  # biases take a visible share
    with torch.no_grad():  # the reported conservation is the measured ratio, off 1 here (eval: running BN stats)
        model.eval()
        a_i, a_j = model.pair_embeddings(x_a, x_b, rel)
        d = model.distance(a_i, a_j, model.theta(rel, user))
    torch.testing.assert_close(e.conservation, (sa + sb) / d)
    assert (e.conservation - 1).abs().max() > 1e-3
    g = explain_pairs(model, x_a, x_b, rel, user, target="logit", composite="epsilon")
    torch.testing.assert_close(g.conservation, (g.relevance_sum_a + g.relevance_sum_b) / -d)


def test_features_mode_shapes_and_conservation() -> None:
    torch.manual_seed(0)
    model = PairModel(FeatureBackbone(16), dim=5, n_relations=N_REL, n_users=0)
    x_a, x_b = torch.rand(3, 16), torch.rand(3, 16)
    e = explain_pairs(model, x_a, x_b, 2, -1, target="similarity", composite="lrp0")
    assert e.relevance_a.shape == (3, 16)
    torch.testing.assert_close(e.relevance_a.sum(1), e.target_value, rtol=1e-4, atol=1e-7)


def test_siamese_order_and_repeated_items() -> None:
    model = _model(bias=True, batchnorm=True)
    model.train()  # explanations use eval semantics regardless
    x_a, x_b, rel, user = _pairs(3)
    A, B, C = x_a[0:1], x_b[0:1], x_a[1:2]
    r, u = rel[:1], user[:1]
    ab = explain_pairs(model, A, B, r, u)
    ba = explain_pairs(model, B, A, r, u)
    torch.testing.assert_close(ab.relevance_a, ba.relevance_b)
    torch.testing.assert_close(ab.relevance_b, ba.relevance_a)
    # a batch with A twice (and a pair (A, A)) gives each row what the pair alone gives
    xs_a, xs_b = torch.cat([A, A, C, A]), torch.cat([B, A, A, C])
    rr, uu = r.repeat(4), u.repeat(4)
    batch = explain_pairs(model, xs_a, xs_b, rr, uu, batch_size=3)
    for i in range(4):
        one = explain_pairs(model, xs_a[i:i + 1], xs_b[i:i + 1], rr[:1], uu[:1])
        torch.testing.assert_close(batch.relevance_a[i:i + 1], one.relevance_a, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(batch.relevance_b[i:i + 1], one.relevance_b, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(batch.relevance_a[1], batch.relevance_b[1])  # (A, A) is symmetric


def test_callers_model_is_unchanged() -> None:
    model = _model(bias=True, batchnorm=True)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_a, x_b, rel, user = _pairs(2)
    for comp in ("epsilon-plus-flat", "epsilon-gamma-box"):
        explain_pairs(model, x_a, x_b, rel, user, composite=comp)
    bilrp(model, x_a, x_b, rel, user, grid=4)
    attribute(model, x_a, x_b, rel, user, "gradxinput")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in model.modules())


def test_create_graph_is_exact_second_order() -> None:
    # lrp0 on a bias-free backbone conserves exactly, so Σ relevance_a ≡ S as a function of
    # the parameters: its parameter gradient must equal the plain gradient of S.
    model = _model(dim=4)
    x_a, x_b, rel, user = _pairs(2)
    e = explain_pairs(model, x_a, x_b, rel, user, composite="lrp0", create_graph=True)
    params = [model.backbone.features[0].weight, model.backbone.classifier[0].weight, model.E, model.theta_delta]
    g_rel = torch.autograd.grad(e.relevance_a.sum(), params)
    a_i, a_j = model.pair_embeddings(x_a, x_b, rel)
    s = (2 * model.theta(rel, user).pow(2) * a_i * a_j).sum()
    g_s = torch.autograd.grad(s, params)
    for gr, gs in zip(g_rel, g_s):
        assert gs.abs().max() > 0
        torch.testing.assert_close(gr, gs, rtol=1e-3, atol=1e-4 * float(gs.abs().max()))
    # with BatchNorm and multi-term rules the differentiable relevance is the same relevance,
    # and it reaches the backbone's parameters (through the functional BN fold too)
    bn = _model(bias=True, batchnorm=True)
    e = explain_pairs(bn, x_a, x_b, rel, user, create_graph=True, target="logit", composite="epsilon-gamma-box")
    plain = explain_pairs(bn, x_a, x_b, rel, user, target="logit", composite="epsilon-gamma-box")
    torch.testing.assert_close(e.relevance_a.detach(), plain.relevance_a, rtol=1e-4, atol=1e-6 * float(plain.relevance_a.abs().max()))
    e.relevance_a.abs().sum().backward()
    for p in (bn.backbone.features[0].weight, bn.backbone.features[1].weight, bn.E):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_unknown_names_raise() -> None:
    model = _model()
    x_a, x_b, rel, user = _pairs(1)
    with pytest.raises(ValueError, match="unknown target"):
        explain_pairs(model, x_a, x_b, rel, user, target="cosine")
    with pytest.raises(ValueError, match="epsilon-plus-flat"):
        explain_pairs(model, x_a, x_b, rel, user, composite="lrp-nope")
    with pytest.raises(ValueError, match="similarity"):
        bilrp(model, x_a, x_b, rel, user, target="distance")
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(model, x_a, x_b, rel, user, "occlusion")


@pytest.mark.parametrize("composite", ["lrp0", "epsilon"])
def test_bilrp_sums_to_similarity(composite: str) -> None:
    model = _model()
    x_a, x_b, rel, user = _pairs(3)
    m = bilrp(model, x_a, x_b, rel, user, composite=composite, grid=4, chunk=4)
    assert m.shape == (3, 16, 16)
    e = explain_pairs(model, x_a, x_b, rel, user, composite=composite)
    torch.testing.assert_close(m.sum((1, 2)), e.target_value, rtol=1e-2, atol=0)
    # conserving maps: the marginals are the first-order similarity maps (LRP is linear in the seed)
    ra, rb = marginals(model, x_a, x_b, rel, user, composite=composite)
    torch.testing.assert_close(ra, e.relevance_a, rtol=1e-3, atol=1e-4 * float(e.relevance_a.abs().max()))
    torch.testing.assert_close(m.sum(2), grid_pool(ra.sum(1), 4), rtol=1e-3, atol=1e-3 * float(m.sum(2).abs().max()))
    torch.testing.assert_close(m.sum(1), grid_pool(rb.sum(1), 4), rtol=1e-3, atol=1e-3 * float(m.sum(1).abs().max()))
    links = top_links(m[0], 5)
    assert len(links) == 5 and abs(links[0][2]) == float(m[0].abs().max())
    assert [abs(v) for _, _, v in links] == sorted((abs(v) for _, _, v in links), reverse=True)


def test_grid_pool_conserves_uneven_sizes() -> None:
    r = torch.randn(2, 30, 28)
    p = grid_pool(r, 8)
    assert p.shape == (2, 64)
    torch.testing.assert_close(p.sum(1), r.sum((1, 2)))


def test_baselines_explain_the_same_target() -> None:
    model = _model(bias=True)
    x_a, x_b, rel, user = _pairs(2)
    ra, rb = attribute(model, x_a, x_b, rel, user, "gradxinput", target="distance")
    xa, xb = x_a.clone().requires_grad_(True), x_b.clone().requires_grad_(True)
    logit = model(xa, xb, rel, user)
    ga, gb = torch.autograd.grad((model.c[rel] - logit).sum(), [xa, xb])
    torch.testing.assert_close(ra, x_a * ga)
    torch.testing.assert_close(rb, x_b * gb)
    sa, _ = attribute(model, x_a, x_b, rel, user, "saliency", target="distance")
    torch.testing.assert_close(sa, ga.abs())
    # integrated gradients (zero baseline, side b fixed) is complete up to the path quadrature
    ia, ib = attribute(model, x_a, x_b, rel, user, "integrated_gradients", target="similarity")
    with torch.no_grad():
        a_i, a_j = model.pair_embeddings(x_a, x_b, rel)
        z_i, _ = model.pair_embeddings(torch.zeros_like(x_a), x_b, rel)
        th2 = model.theta(rel, user).pow(2)
        gap = (2 * th2 * a_i * a_j).sum(1) - (2 * th2 * z_i * a_j).sum(1)
    torch.testing.assert_close(ia.flatten(1).sum(1), gap, rtol=0.05, atol=1e-3 * float(gap.abs().max()))
    r1 = attribute(model, x_a, x_b, rel, user, "random", seed=3)
    r2 = attribute(model, x_a, x_b, rel, user, "random", seed=3)
    assert torch.equal(r1[0], r2[0]) and r1[0].shape == x_a.shape and not torch.equal(r1[0], r1[1])
    assert set(METHODS) == {"saliency", "gradxinput", "integrated_gradients", "random"}


def _bn_double_model() -> PairModel:
    return _model(bias=True, batchnorm=True, dim=8).double().eval()


def test_bilrp_marginals_are_row_sums_under_any_composite() -> None:
    """Biases, BN shifts, γ: maps do not conserve, and the marginals still equal the matrix's row/column sums."""
    model = _bn_double_model()
    x_a, x_b, rel, user = (t.double() if t.is_floating_point() else t for t in _pairs(3))
    for comp in ("epsilon-gamma-box", "gamma"):
        m = bilrp(model, x_a, x_b, rel, user, composite=comp, grid=4)
        ra, rb = marginals(model, x_a, x_b, rel, user, composite=comp)
        scale = float(m.abs().sum((1, 2)).max())
        torch.testing.assert_close(grid_pool(ra.sum(1), 4), m.sum(2), rtol=1e-9, atol=1e-12 * scale)
        torch.testing.assert_close(grid_pool(rb.sum(1), 4), m.sum(1), rtol=1e-9, atol=1e-12 * scale)
        first = explain_pairs(model, x_a, x_b, rel, user, composite=comp)  # ≠ the first-order map here
        assert (first.relevance_a - ra).abs().max() > 1e-3 * ra.abs().max()


def test_bilrp_fast_path_equals_per_dimension_path() -> None:
    """float64: rank ≥ K is the exact matrix; with θ on 3 dimensions, rank 6 (3 exact + 3 sketched) is exact too."""
    model = _bn_double_model()
    x_a, x_b, rel, user = (t.double() if t.is_floating_point() else t for t in _pairs(3))
    exact = bilrp(model, x_a, x_b, rel, user, grid=4)
    torch.testing.assert_close(bilrp(model, x_a, x_b, rel, user, grid=4, rank=8, chunk=3), exact, rtol=1e-12, atol=0)
    with torch.no_grad():
        model.theta_global[:, 3:] = 0
        model.theta_delta.zero_()
    exact = bilrp(model, x_a, x_b, rel, user, grid=4)
    fast = bilrp(model, x_a, x_b, rel, user, grid=4, rank=6, seed=3)
    assert exact.abs().max() > 0
    torch.testing.assert_close(fast, exact, rtol=1e-10, atol=1e-14 * float(exact.abs().max()))
    with pytest.raises(ValueError, match="rank"):
        bilrp(model, x_a, x_b, rel, user, grid=4, rank=0)


def test_bilrp_sketch_is_unbiased() -> None:
    """The sketch's directions satisfy E[Σ_j g_j g_jᵀ] = I (exactly I on the top dimensions)."""
    from lrprec.explain.bilrp import _seed_basis

    weight = torch.tensor([[5.0, -4.0, 0.1, 0.2, 0.3, 0.05, 0.0, 0.4]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    acc = torch.zeros(8, 8, dtype=torch.float64)
    n = 2000
    for _ in range(n):
        g = _seed_basis(weight, 4, gen)[:, 0]  # (4, K): dims 0 and 1 exact, 2 sketched directions
        acc += g.t() @ g
    mean = acc / n
    torch.testing.assert_close(mean[:2, :2], torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(mean, torch.eye(8, dtype=torch.float64), rtol=0, atol=0.08)
