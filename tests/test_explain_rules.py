"""The LRP engine's rules, composites and canonizer against hand-computed numpy and captum."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lrprec.explain import rules
from lrprec.explain.canonizers import canonize, fold_batchnorm
from lrprec.explain.composites import COMPOSITES, Composite, get_composite
from lrprec.explain.engine import LRPNet, explain
from lrprec.model.backbones import SmallCNN

EPS = 0.1
GAMMA = 0.5


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()


def _gamma_contributions(c: np.ndarray, b: np.ndarray, g: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalized γ (Montavon et al. 2019; Andéol et al. 2021) on contributions c_jk = x_j w_jk:
    c + γc⁺ (bias b + γb⁺) for outputs z_k = Σ_j c_jk + b_k > 0, c + γc⁻ (b + γb⁻) for z_k < 0."""
    up = c.sum(0) + b >= 0
    c_mod = np.where(up[None, :], c + g * np.clip(c, 0, None), c + g * np.clip(c, None, 0))
    b_mod = np.where(up, b + g * np.clip(b, 0, None), b + g * np.clip(b, None, 0))
    return c_mod, b_mod


# ---- numpy reference: R_j = Σ_k c_jk / stab(z_k) · R_k with the rule's contributions c ------------
def _np_layer(rule: str, x: np.ndarray, w: np.ndarray, b: np.ndarray, r_out: np.ndarray,
              low: np.ndarray | None = None, high: np.ndarray | None = None) -> np.ndarray:
    """One linear layer y = x @ w.T + b for one sample; w is (out, in) like torch."""
    wt = w.T  # (in, out)
    wp, wm = np.clip(wt, 0, None), np.clip(wt, None, 0)
    xc = x[:, None]
    if rule == "epsilon":
        c, zb, eps = xc * wt, b, EPS
    elif rule == "lrp0":  # Bach et al. 2015: z_k includes the bias
        c, zb, eps = xc * wt, b, rules.TINY
    elif rule == "gamma":
        c, zb = _gamma_contributions(xc * wt, b, GAMMA)
        eps = 1e-6  # rules.gamma's default ε
    elif rule == "zplus":
        c, zb, eps = np.clip(xc, 0, None) * wp + np.clip(xc, None, 0) * wm, 0.0, rules.TINY
    elif rule == "flat":
        c, zb, eps = np.ones_like(wt), 0.0, rules.TINY
    elif rule == "wsquare":
        c, zb, eps = wt ** 2, 0.0, rules.TINY
    elif rule == "zbox":
        c, zb, eps = xc * wt - low[:, None] * wp - high[:, None] * wm, 0.0, rules.TINY
    else:
        raise AssertionError(rule)
    z = c.sum(0) + zb
    stab = z + np.where(z >= 0, eps, -eps)
    return (c / stab * r_out).sum(1)


def _np_lrp(net: nn.Sequential, x: np.ndarray, k: int, first: str, second: str, low=None, high=None) -> np.ndarray:
    w1, b1 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    w2, b2 = net[2].weight.detach().numpy(), net[2].bias.detach().numpy()
    out = []
    for xs in x:
        h = np.maximum(xs @ w1.T + b1, 0)
        y = h @ w2.T + b2
        r_y = np.zeros_like(y)
        r_y[k] = y[k]
        r_h = _np_layer(second, h, w2, b2, r_y)  # ReLU passes relevance (zero where h = 0)
        out.append(_np_layer(first, xs, w1, b1, r_h, low, high))
    return np.stack(out)


RULE_FACTORIES = {
    "epsilon": lambda: rules.epsilon(EPS), "lrp0": rules.lrp0, "gamma": lambda: rules.gamma(GAMMA),
    "zplus": rules.zplus, "flat": rules.flat, "wsquare": rules.wsquare,
}


@pytest.mark.parametrize("first,second", [
    ("epsilon", "epsilon"), ("lrp0", "lrp0"), ("gamma", "gamma"), ("zplus", "zplus"),
    ("flat", "epsilon"), ("wsquare", "gamma"), ("zbox", "epsilon"), ("gamma", "zplus"),
])
def test_two_layer_rules_match_numpy(first: str, second: str) -> None:
    net = _net()
    torch.manual_seed(1)
    x = torch.randn(5, 4, dtype=torch.float64)  # mixed signs: exercises x⁺/x⁻ terms at the input
    low, high = -torch.full((4,), 2.5, dtype=torch.float64), torch.full((4,), 3.0, dtype=torch.float64)
    first_rule = rules.zbox(low, high) if first == "zbox" else RULE_FACTORIES[first]()
    comp = Composite("test", conv=RULE_FACTORIES[second](), dense=RULE_FACTORIES[second](), first=first_rule)
    k = 1
    seed = torch.zeros(5, 2, dtype=torch.float64)
    seed[:, k] = 1.0
    ours = explain(net, x, comp, seed).numpy()
    ref = _np_lrp(net, x.numpy(), k, first, second, low.numpy(), high.numpy())
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def _plain_cnn() -> SmallCNN:
    # average pooling: captum's LRP (the oracle below) has no rule for adaptive max pooling
    torch.manual_seed(0)
    return SmallCNN(channels=(4, 8, 8, 16), out_dim=12, bias=True, batchnorm=False, pool="avg").double().eval()


@pytest.mark.parametrize("eps", [1e-6, 0.05])
def test_epsilon_matches_captum_lrp(eps: float) -> None:
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule

    model = _plain_cnn()
    torch.manual_seed(2)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        k = int(model(x).sum(0).argmax())
    theirs_model = copy.deepcopy(model)
    for m in theirs_model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.rule = EpsilonRule(epsilon=eps)  # pooling keeps captum's default ε = 1e-9 (≈ our LRP-0 there)
    theirs = LRP(theirs_model).attribute(x.clone().requires_grad_(True), target=k).detach()
    seed = torch.zeros(4, 12, dtype=torch.float64)
    seed[:, k] = 1.0
    comp = Composite("eps", conv=rules.epsilon(eps), dense=rules.epsilon(eps))
    ours = explain(model, x, comp, seed)
    assert theirs.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6 * float(theirs.abs().max()))


@pytest.mark.parametrize("name", ["zplus"])
def test_bias_free_rules_conserve_on_backbone(name: str) -> None:
    model = _plain_cnn()
    torch.manual_seed(3)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
    k = int(out.sum(0).argmax())
    seed = torch.zeros_like(out)
    seed[:, k] = 1.0
    rel = explain(model, x, name, seed)  # z⁺ ignores biases: every layer conserves exactly
    torch.testing.assert_close(rel.sum((1, 2, 3)), out[:, k], rtol=1e-6, atol=1e-12)


def _bn_cnn() -> SmallCNN:
    torch.manual_seed(0)
    model = SmallCNN(channels=(4, 8, 8, 16), out_dim=12)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.double()


def test_batchnorm_folding_preserves_function_and_leaves_model_alone() -> None:
    model = _bn_cnn()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    model.eval()
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(folded(x), ref)
    model.train()
    # the engine folds functionally: its forward values are the eval-mode model's outputs
    net = LRPNet(model, "epsilon-gamma-box")
    assert sum(layer.__class__.__name__ == "ParamLayer" for layer in net.layers) == 5  # 4 convs + 1 linear
    trace = net.forward(x.clone().requires_grad_(True))
    torch.testing.assert_close(trace.output.detach(), ref)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_canonize_rejects_unsupported_layers() -> None:
    with pytest.raises(TypeError, match="not supported"):
        canonize(nn.Sequential(nn.Linear(3, 3), nn.Sigmoid()))
    with pytest.raises(TypeError, match="BatchNorm2d must directly follow"):
        canonize(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)))


def test_composite_registry_and_errors() -> None:
    for name in ("lrp0", "epsilon", "gamma", "zplus", "epsilon-plus-flat", "epsilon-gamma-box"):
        assert get_composite(name) is COMPOSITES[name]
    with pytest.raises(ValueError, match="epsilon-plus-flat"):
        get_composite("nope")
    with pytest.raises(ValueError, match="input layer only"):
        Composite("bad", conv=rules.flat(), dense=rules.epsilon())
    comp = get_composite("epsilon-gamma-box")
    assert comp.rule_for("conv2d", True).name == "zbox"
    assert comp.rule_for("conv2d", False).name.startswith("gamma")
    assert comp.rule_for("linear", False).name.startswith("epsilon")


def _gamma_matrix_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray, r_out: np.ndarray, g: float,
                            eps: float) -> np.ndarray:
    """R = x ⊙ (C'/stab(z')) R_out for a batch, in matrix form; w is (out, in)."""
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        c_mod, b_mod = _gamma_contributions(x[n][:, None] * w.T, b, g)
        z = c_mod.sum(0) + b_mod
        out[n] = c_mod @ (r_out[n] / (z + np.where(z >= 0, eps, -eps)))
    return out


@pytest.mark.parametrize("g", [0.25, 1.0])
def test_gamma_on_signed_outputs_matches_generalized_reference(g: float) -> None:
    """A dense layer with signed inputs and outputs (like the projection E): the z < 0 outputs use c + γc⁻."""
    torch.manual_seed(4)
    layer = nn.Linear(6, 5).double()
    x = torch.randn(8, 6, dtype=torch.float64)
    with torch.no_grad():
        z = layer(x)
    assert (z < 0).sum() > 5 and (z > 0).sum() > 5 and (x < 0).any()
    seed = torch.randn(8, 5, dtype=torch.float64)  # output relevance z · seed, of both signs
    comp = Composite("g", conv=rules.gamma(g), dense=rules.gamma(g))
    ours = explain(nn.Sequential(layer), x, comp, seed).numpy()
    ref = _gamma_matrix_reference(x.numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                                  (z * seed).numpy(), g, 1e-6)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())
    # sign-awareness keeps each denominator on z's side: relevance sums stay near the output relevance
    np.testing.assert_allclose(ours.sum(1), ref.sum(1), rtol=1e-6)


def test_gamma_behind_relu_skips_the_negative_form_exactly() -> None:
    """Conv → ReLU: outputs with z < 0 get no relevance, so the z ≥ 0 form alone gives the same result."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    seed = torch.randn(6, 3, dtype=torch.float64)
    ours = explain(net, x, Composite("g", conv=rules.gamma(0.5), dense=rules.gamma(0.5)), seed).numpy()
    w1, b1 = net[0].weight.detach().numpy(), net[0].bias.detach().numpy()
    w2, b2 = net[2].weight.detach().numpy(), net[2].bias.detach().numpy()
    xn = x.numpy()
    h = np.maximum(xn @ w1.T + b1, 0)
    y = h @ w2.T + b2
    r_h = _gamma_matrix_reference(h, w2, b2, y * seed.numpy(), 0.5, 1e-6)
    ref = _gamma_matrix_reference(xn, w1, b1, r_h, 0.5, 1e-6)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)


def test_lrp0_is_gradient_times_input_on_relu_nets() -> None:
    """LRP-0 with the bias in z_k (the bias keeps its share) equals gradient × input in a ReLU/max-pool network."""
    model = _bn_cnn().eval()
    torch.manual_seed(6)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    out = model(x)
    seed = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, x, seed)
    rel = explain(model, x.detach(), "lrp0", seed)
    # (the stabilizer ε = 1e-9 only shows on outputs with |z| ~ 1e-6)
    torch.testing.assert_close(rel, x.detach() * g, rtol=1e-6, atol=1e-7 * float(rel.abs().max()))


def test_scale_norm_backbone_is_bias_free_once_folded_and_conserves() -> None:
    """SmallCNN(bias=False, batchnorm="scale"): the fold adds no shift, so ε-γ-box relevance sums to the output."""
    torch.manual_seed(7)
    model = SmallCNN(channels=(4, 8, 8, 16), out_dim=12, bias=False, batchnorm="scale").double()
    x = torch.rand(6, 3, 32, 32, dtype=torch.float64) * 4 - 2  # inside the zB box [-2, 2]
    model.train()
    model(x)  # one batch of statistics
    model.eval()
    for layer in canonize(model):
        if getattr(layer, "kind", None) == "conv2d":
            b = layer.params()[1]
            assert b is None or float(b.detach().abs().max()) == 0.0
    with torch.no_grad():
        out = model(x)
        conv = model.features[0]  # eval: a pure per-channel scale by the running uncentred second moment
        h = nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding)
        scale = model.features[1].weight * torch.rsqrt(model.features[1].running_var + 1e-5)
        torch.testing.assert_close(model.features[1](h), h * scale.view(1, -1, 1, 1))
    k = int(out.sum(0).argmax())
    seed = torch.zeros_like(out)
    seed[:, k] = 1.0
    rel = explain(model, x, "epsilon-gamma-box", seed)
    torch.testing.assert_close(rel.sum((1, 2, 3)), out[:, k], rtol=1e-4, atol=1e-10)
    with pytest.raises(ValueError, match="batchnorm"):
        SmallCNN(batchnorm="group")
