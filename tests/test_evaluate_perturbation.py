"""Region perturbation and AOPC: exact answers on hand-made models, seeding, safety, errors, quantus."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrprec.evaluate.perturbation import (
    aopc,
    bootstrap_ci,
    n_regions,
    perturbation_curves,
    region_order,
    region_relevance,
    uniform_fill,
)

H = W = 16
S = 4  # 4x4 grid of 4x4 regions


def region_slice(t: int) -> tuple[slice, slice]:
    r, c = divmod(t, W // S)
    return slice(r * S, (r + 1) * S), slice(c * S, (c + 1) * S)


def looking_model(targets: list[int]):
    """A model that only looks at one region per image: f(x_n) = sum of x_n inside region targets[n]."""
    def score(xb: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        out = torch.empty(xb.shape[0], dtype=torch.float64)
        for i, n in enumerate(rows.tolist()):
            hs, ws = region_slice(targets[n])
            out[i] = xb[i, :, hs, ws].double().sum()
        return out
    return score


def true_maps(targets: list[int]) -> torch.Tensor:
    rel = torch.zeros(len(targets), H, W)
    for n, t in enumerate(targets):
        hs, ws = region_slice(t)
        rel[n, hs, ws] = 1.0
    return rel


TARGETS = [6, 0, 15, 9, 3, 12, 5, 10]


def test_aopc_exact_known_answer_morf_lrf_random():
    x = torch.ones(len(TARGETS), 3, H, W)
    score, rel = looking_model(TARGETS), true_maps(TARGETS)
    L = 5
    full = 3 * S * S  # f(x0) = 48
    morf = perturbation_curves(score, x, rel, L, S, "morf", fill=0.0, batch_size=7)
    assert morf.shape == (len(TARGETS), L + 1)
    expected = torch.zeros(len(TARGETS), L + 1, dtype=torch.float64)
    expected[:, 0] = full
    assert torch.equal(morf, expected)  # the region the model uses goes first
    np.testing.assert_array_equal(aopc(morf), np.full(len(TARGETS), full * L / (L + 1)))  # 40 exactly

    lrf = perturbation_curves(score, x, rel, L, S, "lrf", fill=0.0)
    np.testing.assert_array_equal(aopc(lrf), np.zeros(len(TARGETS)))  # it goes last: never reached in 5 of 16 steps

    rand = perturbation_curves(score, x, rel, L, S, "random", fill=0.0, seed=3)
    order = region_order(torch.zeros(len(TARGETS), n_regions(H, W, S)), "random", seed=3)
    for n, t in enumerate(TARGETS):
        p = int((order[n] == t).nonzero())  # replaced at step p + 1
        want = full * max(L - p, 0) / (L + 1)
        assert aopc(rand[n:n + 1])[0] == pytest.approx(want, abs=1e-12)
    assert aopc(morf).mean() > aopc(rand).mean()  # MoRF with the true map beats random


def test_uniform_fill_stays_in_bounds_and_is_what_gets_inserted():
    torch.manual_seed(0)
    x = torch.randn(4, 3, H, W)
    lo, hi = torch.tensor([-1.0, 0.0, 2.0]).view(1, 3, 1, 1), torch.tensor([1.0, 0.5, 3.0]).view(1, 3, 1, 1)
    noise = uniform_fill(x, (lo, hi), seed=5)
    assert bool(((noise >= lo) & (noise <= hi)).all())
    assert torch.equal(noise, uniform_fill(x, (lo, hi), seed=5))
    targets = [1, 2, 3, 4]
    curves = perturbation_curves(looking_model(targets), x, true_maps(targets), 3, S, "morf", fill="uniform", bounds=(lo, hi), seed=5)
    for n, t in enumerate(targets):
        hs, ws = region_slice(t)
        assert curves[n, 0].item() == pytest.approx(x[n, :, hs, ws].double().sum().item())
        assert torch.allclose(curves[n, 1:], noise[n, :, hs, ws].double().sum().expand(3))


def test_random_order_is_seeded():
    torch.manual_seed(1)
    x = torch.randn(5, 3, H, W)
    w = torch.randn(3, H, W)

    def score(xb, rows):
        return (xb * w).sum((1, 2, 3))

    a = perturbation_curves(score, x, None, 10, S, "random", seed=11)
    b = perturbation_curves(score, x, None, 10, S, "random", seed=11)
    c = perturbation_curves(score, x, None, 10, S, "random", seed=12)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # per pair: different images get different permutations
    order = region_order(torch.zeros(5, 16), "random", seed=11)
    assert len({tuple(o.tolist()) for o in order}) > 1


def test_never_modifies_callers_tensors_and_is_batch_size_independent():
    torch.manual_seed(2)
    x = torch.randn(3, 3, H, W)
    rel = torch.randn(3, 3, H, W)
    x0, rel0 = x.clone(), rel.clone()
    calls = []

    def vandal(xb, rows):
        calls.append(xb.shape[0])
        s = xb.sum((1, 2, 3))
        xb.zero_()  # a score function that scribbles on its input must not reach the caller's x
        return s

    out = {bs: perturbation_curves(vandal, x, rel, 8, S, order, batch_size=bs) for bs in (5, 64) for order in ("morf",)}
    assert torch.equal(x, x0) and torch.equal(rel, rel0)
    assert torch.allclose(out[5], out[64])
    assert calls[: math.ceil(3 * 9 / 5)] == [5, 5, 5, 5, 5, 2]  # all pairs x steps in batches
    assert calls[math.ceil(3 * 9 / 5):] == [27]


def test_border_regions_and_full_replacement():
    x = torch.ones(2, 3, 10, 10)  # S=4 on 10 px: 3x3 regions, the last row/column 2 px wide
    assert n_regions(10, 10, 4) == 9
    rel = torch.arange(200, dtype=torch.float32).view(2, 10, 10)
    c = perturbation_curves(lambda xb, rows: xb.sum((1, 2, 3)), x, rel, 9, 4, "morf", fill=0.0)
    assert c[:, 0].tolist() == [300.0, 300.0] and c[:, -1].tolist() == [0.0, 0.0]
    # MoRF replaces the region with the largest relevance *sum* first; border regions are smaller
    sums = region_relevance(rel, 4)
    assert sums.shape == (2, 9)
    first = int(sums[0].argmax())
    sizes = [16, 16, 8, 16, 16, 8, 8, 8, 4]
    assert c[0, 0] - c[0, 1] == 3 * sizes[first]


def test_errors():
    x = torch.zeros(2, 3, H, W)
    f = lambda xb, rows: xb.sum((1, 2, 3))  # noqa: E731
    with pytest.raises(ValueError, match="exceed the 16 regions"):
        perturbation_curves(f, x, torch.zeros(2, H, W), 17, S)
    with pytest.raises(ValueError, match="no pairs"):
        perturbation_curves(f, torch.zeros(0, 3, H, W), torch.zeros(0, H, W), 2, S)
    with pytest.raises(ValueError, match="unknown order"):
        perturbation_curves(f, x, torch.zeros(2, H, W), 2, S, order="best")
    with pytest.raises(ValueError, match="does not match"):
        perturbation_curves(f, x, torch.zeros(2, 8, 8), 2, S)
    with pytest.raises(ValueError, match="needs a relevance map"):
        perturbation_curves(f, x, None, 2, S, order="morf")
    with pytest.raises(ValueError, match="region size"):
        perturbation_curves(f, x, torch.zeros(2, H, W), 2, 0)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([])


def test_aopc_and_bootstrap():
    curves = np.array([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(aopc(curves), [0.5, 0.0])
    v = np.random.default_rng(0).normal(1.0, 0.1, size=200)
    lo, hi = bootstrap_ci(v, seed=0)
    assert lo < v.mean() < hi and hi - lo < 0.05
    assert (lo, hi) == bootstrap_ci(v, seed=0)
    assert bootstrap_ci([2.0, 2.0]) == (2.0, 2.0)


# ---- cross-check with quantus ------------------------------------------------------------
class _PairOnA(torch.nn.Module):
    """What quantus sees: a single-input model that pairs row n of its batch with x_b[n].

    This is why quantus' batch_size must cover all pairs: a smaller batch would restart
    the rows at 0 and pair images with the wrong second image.
    """

    def __init__(self, model, x_b, relation, user):
        super().__init__()
        self.model, self.x_b, self.relation, self.user = model, x_b, relation, user

    def forward(self, x):
        assert x.shape[0] == self.x_b.shape[0]
        return self.model(x.to(self.x_b.dtype), self.x_b, self.relation, self.user).unsqueeze(1)


@pytest.mark.parametrize("order", ["morf", "lrf"])
def test_matches_quantus_region_perturbation(order):
    import quantus
    from lrprec.evaluate.faithfulness import pair_scorer
    from lrprec.model import SmallCNN
    from lrprec.model.pair import PairModel

    torch.manual_seed(0)
    # float64 so both implementations agree to rounding; E scaled so perturbations move the logit visibly
    model = PairModel(SmallCNN(channels=(4, 8, 8, 8), out_dim=16), 4, 4, 0).double().eval()
    with torch.no_grad():
        model.E.mul_(150)
    n, L, fill = 6, 10, 0.25
    x_a, x_b = torch.randn(n, 3, H, W), torch.randn(n, 3, H, W).double()
    relation, user = torch.tensor([0, 1, 2, 3, 0, 1]), torch.full((n,), -1)
    attr = torch.randn(n, 1, H, W)  # continuous: no ties between region sums (quantus' argsort is not stable)

    logits = perturbation_curves(pair_scorer(model, x_b, user), x_a.double(), attr, L, S, order, fill=fill, batch_size=16)
    mine = logits[torch.arange(n), :, relation].numpy()  # (n, L+1) logit of each pair's relation

    metric = quantus.RegionPerturbation(patch_size=S, order="morf" if order == "morf" else "lerf", regions_evaluation=L,
                                        perturb_baseline=fill, normalise=False, abs=False, disable_warnings=True)
    theirs = np.asarray(metric(model=_PairOnA(model, x_b, relation, user).eval(), x_batch=x_a.numpy(), y_batch=np.zeros(n, np.int64),
                               a_batch=attr.numpy(), softmax=False, channel_first=True, batch_size=n, device="cpu"))
    assert theirs.shape == (n, L)  # f(x0) − f(xk) for k = 1..L
    assert np.abs(theirs).mean() > 0.01  # the comparison is not between two flat curves
    np.testing.assert_allclose(mine[:, :1] - mine[:, 1:], theirs, rtol=0, atol=1e-9)
    # AOPC counts k = 0 too (a zero term): ours = sum of quantus' differences / (L + 1)
    np.testing.assert_allclose(aopc(mine), theirs.sum(1) / (L + 1), rtol=0, atol=1e-9)
