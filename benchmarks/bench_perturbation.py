"""Batched region perturbation vs a per-pair loop (SPEC §4: "must be batched").

Measures pairs×steps per second on a SmallCNN pair model at 64 px, all in the same run:

* ``loop``: the straightforward way — for each pair and each step, build the perturbed
  image and call the model once on that single pair (one forward per pair per step);
* ``batched, full forward``: :func:`perturbation_curves` with the plain ``model(x_a, x_b, ...)``
  as score function (the other image is re-embedded every time);
* ``batched, cached other side``: the scorer ``lrprec faithfulness`` uses
  (:func:`pair_scorer`): the unperturbed image's embedding is computed once per pair.

All three use the same regions, orders and noise; the script checks they give the same
curves before timing them. Target: batched ≥ 5× the loop.

    .venv/bin/python benchmarks/bench_perturbation.py [--pairs 32] [--steps 32] [--batch-size 256]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from lrprec.evaluate.faithfulness import pair_scorer
from lrprec.evaluate.perturbation import make_fill, perturbation_curves, pixel_ranks, region_order, region_relevance
from lrprec.model import SmallCNN
from lrprec.model.pair import PairModel


def loop_curves(model: PairModel, x_a: torch.Tensor, x_b: torch.Tensor, relation: torch.Tensor, user: torch.Tensor,
                relevance: torch.Tensor, steps: int, region: int, order: str, fill: torch.Tensor, seed: int) -> torch.Tensor:
    """The reference: one forward pass per pair per step, perturbing one region at a time."""
    n, _, h, w = x_a.shape
    out = torch.empty(n, steps + 1)
    with torch.no_grad():
        for i in range(n):
            ranks = pixel_ranks(region_order(region_relevance(relevance[i:i + 1], region), order, seed), h, w, region)[0]
            xi = x_a[i:i + 1].clone()
            out[i, 0] = model(xi, x_b[i:i + 1], relation[i:i + 1], user[i:i + 1])[0]
            for k in range(steps):
                sel = (ranks == k).expand_as(xi[0]).unsqueeze(0)
                xi[sel] = fill[i:i + 1][sel]
                out[i, k + 1] = model(xi, x_b[i:i + 1], relation[i:i + 1], user[i:i + 1])[0]
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--region", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    model = PairModel(SmallCNN(), 10, 4, 0).eval()
    n, L, S = args.pairs, args.steps, args.region
    x_a = torch.randn(n, 3, args.size, args.size)
    x_b = torch.randn(n, 3, args.size, args.size)
    relation = torch.randint(0, 4, (n,))
    user = torch.full((n,), -1)
    relevance = torch.randn(n, args.size, args.size)
    fill = make_fill(x_a, "uniform", model.backbone.input_bounds(), args.seed)
    rows = torch.arange(n)

    def loop():
        return loop_curves(model, x_a, x_b, relation, user, relevance, L, S, "morf", fill, args.seed)

    def batched_full():
        def score(xb, r):
            return model(xb, x_b[r], relation[r], user[r])
        return perturbation_curves(score, x_a, relevance, L, S, "morf", batch_size=args.batch_size, fill_values=fill, seed=args.seed)

    def batched_cached():
        c = perturbation_curves(pair_scorer(model, x_b, user, args.batch_size), x_a, relevance, L, S, "morf",
                                batch_size=args.batch_size, fill_values=fill, seed=args.seed)
        return c[rows, :, relation]

    # warm up and check that all three compute the same curves
    ref = loop_curves(model, x_a[:2], x_b[:2], relation[:2], user[:2], relevance[:2], L, S, "morf", fill[:2], args.seed)
    for fn in (batched_full, batched_cached):
        fn()
    t_loop, c_loop = timed(loop, 1)
    t_full, c_full = timed(batched_full, args.repeats)
    t_cached, c_cached = timed(batched_cached, args.repeats)
    assert torch.allclose(c_loop[:2], ref, atol=1e-5)
    assert torch.allclose(c_full, c_loop, atol=1e-4), (c_full - c_loop).abs().max()
    assert torch.allclose(c_cached, c_loop, atol=1e-4), (c_cached - c_loop).abs().max()

    work = n * (L + 1)
    print("# Region perturbation: batched vs per-pair loop\n")
    print(f"SmallCNN pair model (K=10, 4 heads), {args.size} px, {n} pairs x {L + 1} steps (incl. step 0) = {work} pair evaluations, "
          f"{S}x{S} regions, MoRF, batch size {args.batch_size}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}\n")
    print("| method | seconds | pairs x steps / s | speed-up vs loop |")
    print("|---|---:|---:|---:|")
    for name, t in (("per-pair loop (1 forward per pair per step)", t_loop),
                    ("batched, full pair forward", t_full),
                    ("batched, other image cached (used by `lrprec faithfulness`)", t_cached)):
        print(f"| {name} | {t:.3f} | {work / t:,.0f} | {t_loop / t:.1f}x |")
    speedup = t_loop / min(t_full, t_cached)
    print(f"\nbest speed-up {speedup:.1f}x (target >= 5x): {'PASS' if speedup >= 5 else 'FAIL'}")


if __name__ == "__main__":
    main()
