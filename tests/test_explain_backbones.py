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
        m.fc.bias.uniform_(0.5, 1.0)  # fc outputs > 0, so relevance reaches the input
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
    ref.load_state_dict(ours.state_dict(), strict=True)  # torchvision's parameter names, key for key
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
    assert r_ours.abs().sum() > 0.01 and (r_ours != 0).double().mean() > 0.5  # relevance reaches the pixels
    assert torch.allclose(r_ours, r_ref, rtol=1e-5, atol=1e-5 * r_ref.abs().max().item()), (r_ours - r_ref).abs().max()


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
