"""ResNet and ViT backbones under our LRP engine, checked against independent references.

ResNet: zennit 0.5.1 (its ResNet canonizer — BatchNorm merged, the residual sum a ``Sum`` module
under the ``Norm`` rule — with the same composite) on a torchvision-layout model restated in
tests/stubs, loaded with our state dict key for key. ViT: lxt 2.1's AttnLRP rules (see
test_vit_matches_lxt_attnlrp).
"""
from __future__ import annotations

import pytest
import torch

from lrprec.explain.engine import explain
from lrprec.model.backbones import build_backbone
from lrprec.model.resnet import ResNet
import oracles
from finite_differences import relative_errors

EPS_TINY = 1e-9  # our stabilizer for z⁺/flat/zᴮ/γ and the residual sum (rules.TINY)


def _random_resnet(block: str, seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    m = ResNet(block, (1, 2, 1, 1), (4, 6, 8, 8), out_dim=5).double().eval()
    with torch.no_grad():  # non-trivial folded BatchNorm: shifts and scales of both signs' effect
        for bn in [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]:
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
            # zennit's merge leaves each BatchNorm as x / √(1 + eps) (running_var := 1, eps kept): a 5e-6
            # scale per block that shifts the residual split by ~1e-5; with eps = 0 both are exact folds
            bn.eps = 0.0
    return m


def _zennit_composite(name: str, low, high):
    oracles.zennit()
    from zennit.composites import SpecialFirstLayerMapComposite, layer_map_base
    from zennit.rules import Epsilon, Flat, Gamma, ZBox, ZPlus
    from zennit.torchvision import ResNetCanonizer
    from zennit.types import Convolution
    # zennit's EpsilonPlusFlat / EpsilonGammaBox with our stabilizers; z⁺ ignores the bias as ours does
    if name == "epsilon-plus-flat":
        conv, first = ZPlus(stabilizer=EPS_TINY, zero_params=["bias"]), Flat(stabilizer=EPS_TINY)
    else:
        conv, first = Gamma(gamma=0.25, stabilizer=1e-6), ZBox(low=low, high=high, stabilizer=EPS_TINY, zero_params=["bias"])
    layer_map = layer_map_base(EPS_TINY) + [(Convolution, conv), (torch.nn.Linear, Epsilon(epsilon=1e-6))]
    return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=[(Convolution, first)], canonizers=[ResNetCanonizer()])


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("composite", ["epsilon-plus-flat", "epsilon-gamma-box"])
def test_resnet_matches_zennit(block: str, composite: str) -> None:
    ours = _random_resnet(block)
    tv = oracles.stub_torchvision_resnet()
    ref = tv.ResNet(tv.BasicBlock if block == "basic" else tv.Bottleneck, [1, 2, 1, 1], (4, 6, 8, 8), num_classes=5)
    # torchvision's parameter names, key for key (our feature layer fc is bias-free: torchvision's fc bias := 0)
    ref.load_state_dict({**ours.state_dict(), "fc.bias": torch.zeros(5)}, strict=True)
    ref = ref.double().eval()
    for bn in [m for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
        bn.eps = 0.0
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = ours(x).detach()
    assert torch.allclose(y, ref(x))
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    r_ours = explain(ours, x, composite, g)
    low, high = (b.double() for b in ours.input_bounds())
    xin = x.clone().requires_grad_(True)
    with _zennit_composite(composite, low, high).context(ref) as modified:
        out = modified(xin)
        (r_ref,) = torch.autograd.grad(out, xin, out * g)  # zennit's output relevance is the seed itself
    assert r_ours.abs().sum() > 1e-4 * (y * g).abs().sum() and (r_ours != 0).double().mean() > 0.5  # relevance reaches the pixels
    assert torch.allclose(r_ours, r_ref, rtol=1e-5, atol=1e-5 * r_ref.abs().max().item()), (r_ours - r_ref).abs().max()


def test_resnet_conserves_under_the_default_composite() -> None:
    """ε-z⁺-flat: Σ R within [0.8, 1.25] of the target on ≥ 95% of pairs (64 px, BatchNorm shifts of both signs)."""
    from lrprec.explain.targets import explain_pairs
    from lrprec.model.backbones import build_backbone
    torch.manual_seed(0)
    # the default widths: with widths (8, 8, 16, 16) only 12% of these pairs conserve (a branch's folded BatchNorm
    # shift, ignored by z⁺, then carries a large part of the sum's share; docs/concepts/backbones.md)
    model = _pair(build_backbone("resnet-small")).float()
    for bn in [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
        with torch.no_grad():
            bn.running_mean.uniform_(-0.3, 0.3), bn.running_var.uniform_(0.5, 2.0), bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.2, 0.2)
    g = torch.Generator().manual_seed(0)
    x_a, x_b = torch.rand(20, 3, 64, 64, generator=g) * 4 - 2, torch.rand(20, 3, 64, 64, generator=g) * 4 - 2
    for target in ("logit", "similarity"):
        e = explain_pairs(model, x_a, x_b, torch.arange(20) % 2, -1, target=target, composite="epsilon-plus-flat")
        assert ((e.conservation >= 0.8) & (e.conservation <= 1.25)).double().mean() >= 0.95, (target, e.conservation)
    # ε-γ-box keeps the BatchNorm shifts' share in the biases: it does not conserve here (measured, not assumed)
    e = explain_pairs(model, x_a, x_b, torch.arange(20) % 2, -1, target="similarity", composite="epsilon-gamma-box")
    assert ((e.conservation >= 0.8) & (e.conservation <= 1.25)).double().mean() < 0.5


def test_resnet_lrp0_is_gradient_times_input() -> None:
    m = _random_resnet("basic")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    y = m(x).detach()
    g = torch.ones_like(y)
    xin = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(m(xin), xin, g)
    r = explain(m, x, "lrp0", g)
    assert torch.allclose(r, x * grad, atol=1e-6 * r.abs().max().item())


def test_resnet_torchvision_checkpoint_loads_and_rejects(tmp_path) -> None:
    tv = oracles.stub_torchvision_resnet()
    ref = tv.ResNet(tv.BasicBlock, [2, 2, 2, 2])  # torchvision's resnet18 layout with its ImageNet fc
    path = tmp_path / "resnet18-f37072fd.pth"
    state = {k: v for k, v in ref.state_dict().items()}
    torch.save(state, path)
    ours = build_backbone("resnet18")
    ignored = ours.load_torchvision(path)
    assert sorted(ignored) == ["fc.bias", "fc.weight"] and ours.out_dim == 512
    assert torch.equal(ours.layer3[0].downsample[0].weight, ref.layer3[0].downsample[0].weight)
    ref.eval(), ours.eval()
    x = torch.randn(1, 3, 64, 64)
    h = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
    for stage in (ref.layer1, ref.layer2, ref.layer3, ref.layer4):
        h = stage(h)
    feats = torch.flatten(ref.avgpool(h), 1)
    assert torch.allclose(ours(x), feats, atol=1e-5)
    from lrprec.errors import UsageError
    with pytest.raises(UsageError, match="not a torchvision resnet50"):
        build_backbone("resnet50").load_torchvision(path)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ours.load_torchvision(tmp_path / "absent.pth")


# ---- Vision Transformer: AttnLRP against lxt -------------------------------------------------------

def _random_vit(dtype=torch.float64):
    from lrprec.model.vit import ViT
    torch.manual_seed(0)
    m = ViT(image_size=16, patch=4, hidden=8, depth=2, heads=2, mlp=16, out_dim=None).to(dtype).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines, biases and tokens
        for name, p in m.named_parameters():
            if p.dim() == 1 or "token" in name:
                p.normal_(0, 0.3) if "bias" in name or "token" in name else p.uniform_(0.5, 1.5)
    return m


def _lxt_vit_forward(m, x):
    """The same ViT written with lxt 2.1's efficient AttnLRP rules (an independent implementation):
    ``layer_norm_forward`` (σ detached), ``identity_rule_implicit`` on GELU, ``divide_gradient`` on q, k (÷4)
    and v (÷2) before the attention products; linear maps and sums pass the plain gradient (LRP-0)."""
    import torch.nn.functional as F
    rules, patches = oracles.lxt_efficient()
    h = m.conv_proj(x).flatten(2).transpose(1, 2)
    h = torch.cat([m.class_token.expand(h.shape[0], -1, -1), h], 1) + m.encoder.pos_embedding
    for blk in m.encoder.layers:
        att = blk.self_attention
        y = patches.layer_norm_forward(blk.ln_1, h)
        B, N, D = y.shape
        q, k, v = (t.reshape(B, N, att.heads, -1).transpose(1, 2) for t in F.linear(y, att.in_proj_weight, att.in_proj_bias).chunk(3, -1))
        q, k, v = rules.divide_gradient(q, 4), rules.divide_gradient(k, 4), rules.divide_gradient(v, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
        h = h + att.out_proj((a @ v).transpose(1, 2).reshape(B, N, D))
        y = patches.layer_norm_forward(blk.ln_2, h)
        y = rules.identity_rule_implicit(F.gelu, blk.mlp[0](y))
        h = h + blk.mlp[3](y)
    return patches.layer_norm_forward(m.encoder.ln, h)[:, 0]


def test_vit_matches_lxt_attnlrp() -> None:
    m = _random_vit()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = m(x).detach()
    xin = x.clone().requires_grad_(True)
    out = _lxt_vit_forward(m, xin)
    assert torch.allclose(out, y, atol=1e-12)
    g = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad(out, xin, g)
    r_ref = xin * grad  # lxt: relevance = input × the modified gradient
    r_ours = explain(m, x, "lrp0", g)
    assert (r_ours != 0).double().mean() > 0.9
    assert torch.allclose(r_ours, r_ref, rtol=1e-5, atol=1e-5 * r_ref.abs().max().item()), (r_ours - r_ref).abs().max()
    # AttnLRP conserves where gradient × input does not: the sum of R equals the output relevance less
    # what the biases, positions and class token absorb; plain gradient × input differs from it
    xin2 = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(m(xin2), xin2, g)
    assert not torch.allclose(x * plain, r_ours, rtol=1e-2)


# ---- second order through both: the guidance loss's parameter gradient vs float64 finite differences ----

def _second_order_errors(model, groups: dict, composite: str, size: int) -> dict[str, float]:
    from lrprec.explain.targets import explain_pairs
    from lrprec.train.guidance import guidance_loss
    g = torch.Generator().manual_seed(1)
    x_a = (torch.rand(2, 3, size, size, generator=g, dtype=torch.float64) - 0.5) / 0.25
    x_b = (torch.rand(2, 3, size, size, generator=g, dtype=torch.float64) - 0.5) / 0.25
    rel, user = torch.tensor([0, 1]), torch.tensor([0, -1])
    penalty = torch.rand(size, size, generator=g, dtype=torch.float64)
    weights = torch.randn(4, 3, size, size, generator=g, dtype=torch.float64)

    def loss() -> torch.Tensor:
        e = explain_pairs(model, x_a, x_b, rel, user, target="logit", composite=composite, create_graph=True)
        r = torch.cat([e.relevance_a, e.relevance_b])
        return guidance_loss(r, penalty) + (weights * r).sum()

    return relative_errors(loss, groups, g)


def _pair(backbone):
    from lrprec.model.pair import PairModel
    torch.manual_seed(3)
    model = PairModel(backbone, dim=3, n_relations=2, n_users=2).double()
    with torch.no_grad():
        model.theta_delta.normal_(0, 0.1)
    return model.eval()


def test_vit_second_order_matches_finite_differences() -> None:
    model = _pair(_random_vit())
    vit = model.backbone
    blk = vit.encoder.layers[0]
    groups = {"conv_proj": list(vit.conv_proj.parameters()), "ln_1": list(blk.ln_1.parameters()),
              "qkv": [blk.self_attention.in_proj_weight, blk.self_attention.in_proj_bias],
              "out_proj": list(blk.self_attention.out_proj.parameters()), "mlp": list(blk.mlp[0].parameters()),
              "tokens": [vit.class_token, vit.encoder.pos_embedding], "final ln": list(vit.encoder.ln.parameters()),
              "E": [model.E], "theta": [model.theta_global]}
    errors = _second_order_errors(model, groups, "epsilon-plus-flat", 16)
    assert max(errors.values()) <= 1e-4, errors


def test_resnet_second_order_matches_finite_differences() -> None:
    net = _random_resnet("basic")
    model = _pair(net)
    blk = net.layer2[0]
    groups = {"conv1 (bn folded)": [net.conv1.weight, net.bn1.weight, net.bn1.bias], "block conv": [blk.conv2.weight, blk.bn2.weight],
              "downsample": [blk.downsample[0].weight, blk.downsample[1].bias], "fc": [net.fc.weight], "E": [model.E]}
    errors = _second_order_errors(model, groups, "epsilon-gamma-box", 16)
    assert max(errors.values()) <= 1e-4, errors


# ---- the per-step relevance trace (engine taps; benchmarks/relevance_trace.py) -------------------------

def _traced(backbone, x, g, composite):
    from lrprec.explain.engine import LRPNet
    net = LRPNet(backbone, composite)
    xin = x.clone().requires_grad_(True)
    taps: list = []
    trace = net.forward(xin, taps=taps)
    trace.output.backward(g)
    return xin, taps, {name: (t * t.grad).sum().item() for name, t in taps if t.grad is not None}


def test_trace_taps_leave_relevance_unchanged_and_show_where_it_goes() -> None:
    m = _random_resnet("basic")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, taps, r = _traced(m, x, g, "epsilon-gamma-box")
    for name, t in taps:  # with taps, relevance is what it is without them (sources included)
        assert t.grad is not None, name
    from lrprec.explain.engine import LRPNet
    net = LRPNet(m, "epsilon-gamma-box")
    xin = x.clone().requires_grad_(True)
    trace = net.forward(xin, taps=[])
    assert torch.allclose(net.relevance(trace, trace.output, g), explain(m, x, "epsilon-gamma-box", g), atol=1e-12)
    blocks = sorted({n.rsplit(".main", 1)[0] for n in r if n.endswith(".main")})
    assert len(blocks) == 5
    for b in blocks:  # the sum step splits its relevance between the branches, conserving it (ε = 1e-9)
        assert r[f"{b}.main"] + r[f"{b}.shortcut"] == pytest.approx(r[b], rel=1e-6, abs=1e-9)
    assert r["fc"] == pytest.approx((m(x) * g).sum().item(), rel=1e-6)  # ε on a bias-free layer


def test_trace_vit_layernorm_conserves_without_its_bias_and_softmax_absorbs() -> None:
    m = _random_vit()
    with torch.no_grad():
        for blk in m.encoder.layers:
            blk.ln_1.bias.zero_(), blk.ln_2.bias.zero_()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = torch.randn(2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, _, r = _traced(m, x, g, "epsilon-plus-flat")
    for i in range(2):
        pre = f"encoder.layers.encoder_layer_{i}"
        for ln in ("ln_1", "ln_2"):  # the fused LayerNorm backward: the centring conserves, σ held constant
            assert r[f"{pre}.{ln}.in"] == pytest.approx(r[f"{pre}.{ln}"], rel=1e-9, abs=1e-12)
        att = f"{pre}.self_attention"
        assert r[f"{att}.softmax"] == pytest.approx(r[f"{att}.a_v"] / 2, rel=1e-9)  # uniform rule: half to A
        # the residual sums conserve; the softmax's gradient × input generally does not (AttnLRP's rule)
        assert r[f"{att}"] + r[f"{att}.skip"] == pytest.approx(r[f"{att}.sum"], rel=1e-6)
    assert any(abs(r[f"encoder.layers.encoder_layer_{i}.self_attention.logits"]
                   - r[f"encoder.layers.encoder_layer_{i}.self_attention.softmax"]) > 1e-3 * abs(r["encoder.ln"]) for i in range(2))


def test_cached_weights_follow_every_change_of_the_model() -> None:
    """Folded, rule-modified weights are reused across calls only while the model's tensors are unchanged."""
    import copy
    m = _random_resnet("basic")
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    first = explain(m, x, "epsilon-plus-flat", g)
    assert torch.equal(explain(m, x, "epsilon-plus-flat", g), first)  # served from the cache: the same values
    with torch.no_grad():  # an in-place update (an optimizer step, a running statistic) is seen
        m.layer1[0].conv1.weight.mul_(-1.5)
        m.layer2[0].bn1.running_mean.add_(0.2)
    changed = explain(m, x, "epsilon-plus-flat", g)
    assert torch.equal(changed, explain(copy.deepcopy(m), x, "epsilon-plus-flat", g)) and not torch.allclose(changed, first)
    m.load_state_dict(_random_resnet("basic", seed=5).state_dict())  # so is a load
    assert torch.equal(explain(m, x, "epsilon-plus-flat", g), explain(_random_resnet("basic", seed=5), x, "epsilon-plus-flat", g))
    m.float()  # and a dtype (or device) change
    assert explain(m, x.float(), "epsilon-plus-flat", g.float()).dtype == torch.float32
