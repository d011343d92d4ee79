"""lrprec's faithfulness evaluation vs Quantus on the same pairs, model, explanations and fills.

One run, one SmallCNN pair model at 64 px (seeded), the same relevance maps, the same
seeded uniform-noise fill image (handed to Quantus as its ``perturb_func``), MoRF region
perturbation of image a with 4×4 regions; the score is P(related) of the pair's relation.

* Quantus ``RegionPerturbation``: its model is a classifier wrapper that scores the perturbed
  image a against the pair's image b with the full pair model (Quantus has no notion of a pair:
  it hands the model a batch of images), all pairs in one Quantus batch;
* Quantus again, with the wrapper given lrprec's cached other-side scorer (so both sides use
  the same per-image model cost and the difference is the evaluation machinery);
* lrprec: :func:`perturbation_curves` with :func:`pair_scorer`, what ``lrprec faithfulness`` runs.

The script checks that all three give the same per-step drops (to 1e-5) before printing the
times, and repeats the comparison for ROAD's noisy linear imputation (noise 0): Quantus's
``noisy_linear_imputation`` per image and step vs lrprec's batched solve.

    PYTHONPATH=src python benchmarks/bench_quantus.py [--pairs 32] [--steps 32]
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from torch import nn

from lrprec.evaluate.faithfulness import pair_scorer
from lrprec.evaluate.imputers import linear_imputation
from lrprec.evaluate.perturbation import make_fill, perturbation_curves, pixel_ranks, region_order, region_relevance
from lrprec.model import SmallCNN
from lrprec.model.pair import PairModel


class PairAsClassifier(nn.Module):
    """What Quantus needs: ``model(x) -> (B, 2)`` class scores; column 1 is P(related) of row i's pair."""

    def __init__(self, score) -> None:
        super().__init__()
        self.score = score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.score(x, torch.arange(x.shape[0]))
        return torch.stack([1 - p, p], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--region", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--road-steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import quantus
    from quantus.functions.perturb_func import noisy_linear_imputation

    torch.manual_seed(args.seed)
    model = PairModel(SmallCNN(), 10, 4, 0).eval()
    n, L, S = args.pairs, args.steps, args.region
    x_a = torch.rand(n, 3, args.size, args.size)
    x_b = torch.rand(n, 3, args.size, args.size)
    relation = torch.randint(0, 4, (n,))
    user = torch.full((n,), -1)
    relevance = torch.randn(n, 1, args.size, args.size)
    fill = make_fill(x_a, "uniform", (0.0, 1.0), args.seed)
    flat_fill = fill.numpy().reshape(n, -1)
    cached = pair_scorer(model, x_b, user)

    def p_cached(xb: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(cached(xb, r)[torch.arange(len(r)), relation[r]])

    def p_full(xb: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(model(xb, x_b[r], relation[r], user[r]))

    def same_fill(arr: np.ndarray, indices: np.ndarray, **kwargs) -> np.ndarray:
        out = arr.copy()
        rr = np.arange(arr.shape[0])[:, None]
        out[rr, indices] = flat_fill[rr, indices]
        return out

    def quantus_run(score) -> np.ndarray:
        metric = quantus.RegionPerturbation(patch_size=S, regions_evaluation=L, order="morf", normalise=False, perturb_func=same_fill,
                                            disable_warnings=True, display_progressbar=False)
        return np.asarray(metric(model=PairAsClassifier(score).eval(), x_batch=x_a.numpy(), y_batch=np.ones(n, dtype=int),
                                 a_batch=relevance.expand(-1, 3, -1, -1).numpy().copy(), device="cpu", softmax=False, batch_size=n,
                                 channel_first=True))

    def ours() -> np.ndarray:
        c = perturbation_curves(p_cached, x_a, relevance, L, S, "morf", fill_values=fill)
        return (c[:, :1] - c[:, 1:]).numpy()

    def timed(fn):
        fn()  # warm-up
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    t_q_full, q_full = timed(lambda: quantus_run(p_full))
    t_q_cached, q_cached = timed(lambda: quantus_run(p_cached))
    t_ours, mine = timed(ours)
    np.testing.assert_allclose(mine, q_full, atol=1e-5)
    np.testing.assert_allclose(mine, q_cached, atol=1e-5)

    # ROAD's noisy linear imputation (noise 0) over the first road-steps MoRF steps of every pair
    ranks = pixel_ranks(region_order(region_relevance(relevance, S), "morf"), args.size, args.size, S)
    total_regions = (args.size // S) ** 2
    counts = [round(k * total_regions / (args.road_steps + 1)) for k in range(1, args.road_steps + 1)]
    masks = torch.stack([(ranks < k).unsqueeze(1) for k in counts], 1).flatten(0, 1)  # (n * steps, 1, H, W)
    xs = x_a.double().repeat_interleave(len(counts), 0)

    def quantus_road() -> np.ndarray:
        return np.stack([noisy_linear_imputation(xs[i].numpy().copy(), np.flatnonzero(masks[i, 0].numpy().ravel()), noise=0.0)
                         for i in range(xs.shape[0])])

    t0 = time.perf_counter()
    q_road = quantus_road()
    t_q_road = time.perf_counter() - t0
    t0 = time.perf_counter()
    o_road = linear_imputation(xs, masks).numpy()
    t_o_road = time.perf_counter() - t0
    np.testing.assert_allclose(o_road, q_road, atol=1e-6)

    work = n * L
    print("# lrprec vs Quantus: same pairs, model, explanations and fills\n")
    print(f"SmallCNN pair model (K=10), {args.size} px, {n} pairs x {L} MoRF steps of {S}x{S} regions = {work} perturbed images; "
          f"quantus {quantus.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}\n")
    print("| evaluation | seconds | perturbed images / s | lrprec speed-up |")
    print("|---|---:|---:|---:|")
    for name, t in (("Quantus RegionPerturbation, full pair model as the classifier", t_q_full),
                    ("Quantus RegionPerturbation, lrprec's cached scorer as the classifier", t_q_cached),
                    ("lrprec `perturbation_curves` + `pair_scorer` (what `lrprec faithfulness` runs)", t_ours)):
        print(f"| {name} | {t:.3f} | {work / t:,.0f} | {t / t_ours:.1f}x |")
    print(f"\nper-step drops agree to {np.abs(mine - q_full).max():.1e} (full) / {np.abs(mine - q_cached).max():.1e} (cached)")
    ratio = t_q_full / t_ours
    print(f"speed-up over Quantus as it is used (full model): {ratio:.1f}x (target >= 10x): {'PASS' if ratio >= 10 else 'FAIL'}; "
          f"same scorer: {t_q_cached / t_ours:.1f}x")
    print(f"\nROAD noisy linear imputation (noise 0), {xs.shape[0]} images (pairs x {len(counts)} MoRF fractions up to "
          f"{counts[-1] / total_regions:.0%}): Quantus {t_q_road:.2f} s, lrprec {t_o_road:.2f} s ({t_q_road / t_o_road:.1f}x), "
          f"max difference {np.abs(o_road - q_road).max():.1e}")


if __name__ == "__main__":
    main()
