"""The faithfulness evaluation's cost against its own model forward passes timed alone (issue 28, item 4).

Per backbone (random weights, eval mode, ``--pairs`` random pairs at ``--size`` px): the
perturbation curves ``lrprec faithfulness`` computes (MoRF order, ``--steps`` steps of
``--region`` px regions, :func:`perturbation_curves` with :func:`pair_scorer`), once with the
uniform-noise fill and once with the linear (ROAD) imputer. Every batch the scorer receives is
recorded; then the same scorer runs alone on exactly those batches (the model's forward
passes, nothing else). Both are timed interleaved in one run; the ratio is the evaluation's
overhead beyond its forward passes (target ≤ 1.2×).

    .venv/bin/python benchmarks/bench_faithfulness_cost.py [--backbones small,resnet-small,vit-small] [--pairs 16] [--steps 16]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from lrprec.evaluate.faithfulness import pair_scorer
from lrprec.evaluate.imputers import make_imputer
from lrprec.evaluate.perturbation import perturbation_curves
from lrprec.model.backbones import build_backbone
from lrprec.model.pair import PairModel


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(name: str, pairs: int, steps: int, size: int, region: int, batch_size: int, repeats: int) -> list[tuple]:
    torch.manual_seed(0)
    config = {"image_size": size} if name.startswith("vit") else {}
    model = PairModel(build_backbone(name, **config), dim=10, n_relations=4, n_users=4, seed=0).eval()
    g = torch.Generator().manual_seed(1)
    lo, hi = model.backbone.input_bounds()
    x_a = lo + (hi - lo) * torch.rand(pairs, 3, size, size, generator=g)
    x_b = lo + (hi - lo) * torch.rand(pairs, 3, size, size, generator=g)
    relevance = torch.rand(pairs, size, size, generator=g)
    user = torch.arange(pairs) % 5 - 1
    scorer = pair_scorer(model, x_b, user, batch_size=batch_size)
    rows = []
    for fill in ("uniform", "linear"):
        batches: list[tuple[torch.Tensor, torch.Tensor]] = []

        def recording(xb: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            batches.append((xb.clone(), r.clone()))
            return scorer(xb, r)

        kw = dict(steps=steps, region=region, order="morf", bounds=(lo, hi), seed=0, batch_size=batch_size)
        if fill == "linear":
            kw["imputer"] = make_imputer("linear", x_a, (lo, hi), seed=0)
        perturbation_curves(recording, x_a, relevance, **kw)  # records the batches (and warms up)

        def curves() -> object:
            return perturbation_curves(scorer, x_a, relevance, **kw)

        def forwards_alone() -> object:
            with torch.no_grad():
                return [scorer(xb, r) for xb, r in batches]

        t_curves, t_alone = [], []
        for _ in range(repeats):
            t_curves.append(_timed(curves))
            t_alone.append(_timed(forwards_alone))
        c, a = statistics.median(t_curves), statistics.median(t_alone)
        rows.append((name, fill, pairs * (steps + 1), c, a, c / a))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", default="small,resnet-small,vit-small")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--region", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.machine()}, 1 thread; {a.pairs} pairs × {a.steps + 1} columns, {a.size} px, "
          f"{a.region} px regions, MoRF; medians of {a.repeats} interleaved repeats\n")
    print("| backbone | fill | images scored | perturbation curves (s) | its forward passes alone (s) | ratio | target |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    for name in a.backbones.split(","):
        for b, fill, n, c, f, r in bench(name, a.pairs, a.steps, a.size, a.region, a.batch_size, a.repeats):
            print(f"| {b} | {fill} | {n} | {c:.3f} | {f:.3f} | {r:.2f} | ≤ 1.2 {'✓' if r <= 1.2 else '✗'} |", flush=True)


if __name__ == "__main__":
    main()
