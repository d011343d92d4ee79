"""The pair model's math (eqs 1-2), Siamese stacking, gradients and VGG-16 loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lrprec.model import VGG16, FeatureBackbone, PairModel, SmallCNN


def test_distance_matches_hand_computation_and_is_symmetric():
    torch.manual_seed(0)
    m = PairModel(FeatureBackbone(6), dim=3, n_relations=4, n_users=2)
    with torch.no_grad():
        m.theta_delta[2, 1] = torch.tensor([0.5, -1.0, 2.0])
        m.c[2] = 0.7
    xi, xj = torch.randn(1, 6), torch.randn(1, 6)
    rel, user = torch.tensor([2]), torch.tensor([1])
    E = m.E.detach().numpy().reshape(6, 4, 3)[:, 2, :]
    a_i, a_j = xi.numpy() @ E, xj.numpy() @ E
    theta = m.theta_global.detach().numpy()[2] + np.array([0.5, -1.0, 2.0])
    d_hand = float((theta ** 2 * (a_i - a_j) ** 2).sum())
    logit = m(xi, xj, rel, user)
    assert logit.item() == pytest.approx(0.7 - d_hand, rel=1e-5)
    assert m(xj, xi, rel, user).item() == pytest.approx(logit.item(), rel=1e-6)
    # unknown user (-1) uses the global θ
    d_global = float((m.theta_global.detach().numpy()[2] ** 2 * (a_i - a_j) ** 2).sum())
    assert m(xi, xj, rel, torch.tensor([-1])).item() == pytest.approx(0.7 - d_global, rel=1e-5)


def test_probability_decreases_with_distance():
    m = PairModel(FeatureBackbone(4), dim=4, n_relations=4)
    x = torch.zeros(5, 4)
    far = torch.stack([torch.full((4,), s) for s in (0.0, 0.5, 1.0, 2.0, 4.0)])
    p = torch.sigmoid(m(x, far, torch.zeros(5, dtype=torch.long), torch.full((5,), -1)))
    assert torch.all(p[1:] < p[:-1])


def test_backbone_runs_once_on_the_stacked_batch():
    m = PairModel(SmallCNN(), dim=4, n_relations=4).eval()
    calls = []
    h = m.backbone.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    xa, xb = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    m(xa, xb, torch.zeros(3, dtype=torch.long), torch.full((3,), -1))
    h.remove()
    assert calls == [6]


def test_vgg16_loads_a_torchvision_state_dict(tmp_path):
    torch.manual_seed(0)
    src = VGG16()
    state = dict(src.state_dict())
    state["classifier.6.weight"] = torch.zeros(1000, 4096)
    state["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    dst = VGG16()
    ignored = dst.load_torchvision(path)
    assert sorted(ignored) == ["classifier.6.bias", "classifier.6.weight"]
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    assert "features.28.weight" in state and "classifier.3.weight" in state
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a torchvision VGG-16"):
        VGG16().load_torchvision(bad)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        VGG16().load_torchvision(tmp_path / "absent.pth")


def test_nonpositive_dim_is_rejected():
    with pytest.raises(ValueError, match="positive"):
        PairModel(FeatureBackbone(3), dim=0, n_relations=4)
