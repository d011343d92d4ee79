"""BiLRP at K = 100: the exact matrix and the m-pass sketch vs a forward+backward (issue 18, item 2).

SmallCNN at 64 px (random weights, eval mode), ``--pairs`` pairs, K = ``--dim``, grid 8,
one thread. In the same run, interleaved:

* ``baseline``: the pair model's forward on [x_a; x_b] and one backward to the input —
  the same baseline as benchmarks/bench_explain.py;
* ``floor``: one plain forward on [x_a; x_b] to the embeddings φ = θ a, then K plain
  vector-Jacobian products to the input (one per embedding dimension, vmapped in the same
  chunks as BiLRP, ``is_grads_batched``): what the exact matrix needs at the least, K
  gradients of one forward, without any LRP rule;
* ``exact``: ``bilrp(...)`` (one LRP pass per embedding dimension, vmapped in chunks);
* ``rank m``: ``bilrp(..., rank=m)``: m/2 dimensions exact, the rest sketched by m − m/2
  random orthogonal combinations (unbiased); its error is the relative Frobenius distance
  to the exact matrix, median over pairs and over ``--seeds`` sketch seeds, and the share
  of the exact matrix's 10 strongest links found among the sketch's 10 strongest.

Also checks that ``rank=K`` reproduces the exact matrix (max abs difference printed).

    .venv/bin/python benchmarks/bench_bilrp.py [--pairs 8] [--dim 100] [--ranks 8,12,16] [--run RUN]
        [--backbone small|resnet-small|vit-small|resnet50]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch

from lrprec.explain.bilrp import bilrp
from lrprec.model.backbones import build_backbone
from lrprec.model.pair import PairModel


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _top_overlap(exact: torch.Tensor, approx: torch.Tensor, n: int = 10) -> float:
    a = set(exact.flatten().abs().topk(n).indices.tolist())
    b = set(approx.flatten().abs().topk(n).indices.tolist())
    return len(a & b) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ranks", default="8,12,16")
    ap.add_argument("--composite", default="epsilon")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--run", default=None, help="a trained run: its model and its first positive test pairs instead")
    ap.add_argument("--backbone", default="small", help="random-weight backbone (without --run)")
    ap.add_argument("--chunk", type=int, default=16, help="embedding dimensions per vmapped backward (BiLRP and floor)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.run:
        import numpy as np

        from lrprec.run import Run

        run = Run.load(args.run)
        model, p = run.model.eval(), run.catalog.pairs("test")
        k = np.flatnonzero(p.label == 1)[:args.pairs]
        x_a, x_b = run.inputs(p.a[k]), run.inputs(p.b[k])
        rel, user = torch.from_numpy(p.relation[k]), torch.from_numpy(p.user[k])
        args.dim, args.size = model.dim, x_a.shape[-1]
    else:
        config = {"image_size": args.size} if args.backbone.startswith("vit") else {}
        model = PairModel(build_backbone(args.backbone, **config), dim=args.dim, n_relations=4, n_users=0).eval()
        x_a, x_b = torch.randn(args.pairs, 3, args.size, args.size), torch.randn(args.pairs, 3, args.size, args.size)
        rel, user = torch.arange(args.pairs) % 4, torch.full((args.pairs,), -1)
    ranks = [int(r) for r in args.ranks.split(",") if r]

    def baseline() -> object:
        xa, xb = x_a.clone().requires_grad_(True), x_b.clone().requires_grad_(True)
        return torch.autograd.grad(model(xa, xb, rel, user).sum(), [xa, xb])

    def floor() -> object:
        x = torch.cat([x_a, x_b]).requires_grad_(True)
        a_i, a_j = model.pair_embeddings(x[:args.pairs], x[args.pairs:], rel)
        phi = torch.cat([a_i, a_j]) * torch.cat([model.theta(rel, user)] * 2)  # (2B, K)
        eye = torch.eye(phi.shape[1])
        out = []
        for j0 in range(0, phi.shape[1], args.chunk):
            seeds = eye[j0:j0 + args.chunk, None, :].expand(-1, phi.shape[0], -1)  # (chunk, 2B, K)
            out.append(torch.autograd.grad(phi, x, seeds, retain_graph=True, is_grads_batched=True)[0].sum(2))
        return out

    kw = dict(composite=args.composite, grid=8, batch_size=args.pairs, chunk=args.chunk)
    fns: dict[str, Callable[[], object]] = {"baseline": baseline, "floor": floor,
                                            "exact": lambda: bilrp(model, x_a, x_b, rel, user, **kw)}
    for m in ranks:
        fns[f"rank {m}"] = (lambda m=m: bilrp(model, x_a, x_b, rel, user, rank=m, **kw))
    for fn in fns.values():  # warm up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            times[k].append(_time(fn))
    med = {k: statistics.median(v) for k, v in times.items()}

    exact = bilrp(model, x_a, x_b, rel, user, **kw)
    full = bilrp(model, x_a, x_b, rel, user, rank=args.dim, **kw)
    errors: dict[int, tuple[float, float]] = {}
    for m in ranks:
        errs, tops = [], []
        for s in range(args.seeds):
            approx = bilrp(model, x_a, x_b, rel, user, rank=m, seed=s, **kw)
            for b in range(args.pairs):
                errs.append(float((approx[b] - exact[b]).norm() / exact[b].norm()))
                tops.append(_top_overlap(exact[b], approx[b]))
        errors[m] = (statistics.median(errs), statistics.mean(tops))

    print(f"{'trained run ' + args.run if args.run else args.backbone + ', random weights'}, {args.size} px, {args.pairs} pairs, K = {args.dim}, grid 8, composite {args.composite}, "
          f"1 thread, torch {torch.__version__}, {platform.machine()}; medians of {args.repeats} interleaved runs")
    print(f"rank = K reproduces the exact matrix: max |diff| = {float((full - exact).abs().max()):.2e} "
          f"(max |R| = {float(exact.abs().max()):.2e})")
    print("| method | seconds | × forward+backward | × floor | rel. Frobenius error (median) | top-10 links found |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| forward+backward (baseline) | {med['baseline']:.4f} | 1.0 | | | |")
    print(f"| floor: forward + K batched plain VJPs | {med['floor']:.3f} | {med['floor'] / med['baseline']:.1f} | 1.00 | | |")
    print(f"| BiLRP exact (K passes) | {med['exact']:.3f} | {med['exact'] / med['baseline']:.1f} | {med['exact'] / med['floor']:.2f} | 0 | 100% |")
    for m in ranks:
        e, t = errors[m]
        print(f"| BiLRP rank {m} ({m // 2} exact + {m - m // 2} sketched) | {med[f'rank {m}']:.3f} | "
              f"{med[f'rank {m}'] / med['baseline']:.1f} | {med[f'rank {m}'] / med['floor']:.2f} | {e:.2f} | {100 * t:.0f}% |")


if __name__ == "__main__":
    main()
