"""Training-time overhead of explanation guidance: guided step time / unguided step time.

One training step of the real trainer's step module (``_PairStep``: forward, BCE, optional
guidance loss, backward, Adam) on the default small CNN at 64 px, batch 128, measured in
the same process for every variant, interleaved round-robin over ``--rounds`` rounds so
that machine noise hits all variants alike; the median step time per variant is kept.
Variants: unguided (the baseline), ``--guide gradient`` and ``--guide lrp`` (ε-γ-box,
differentiable), each with the guidance loss on 32 pairs of the batch (the default
``--guide-pairs``) and on all 128.

    .venv/bin/python benchmarks/bench_guidance.py [--threads 2] [--rounds 7] [--batch 128]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F

from lrprec.run import build_model
from lrprec.train.step import _PairStep
from lrprec.train.trainer import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = asdict(TrainConfig())
    cfg["relations"] = ["also_viewed", "buy_after_viewing", "also_bought", "bought_together"]
    model = build_model(cfg, n_users=6)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    B, S = args.batch, args.size
    batch = {"x": torch.randn(2 * B, 3, S, S), "rel": torch.randint(0, 4, (B,)), "user": torch.randint(-1, 6, (B,)),
             "allowed": (torch.rand(2 * B, S, S) > 0.6).float()}
    label = torch.randint(0, 2, (B,)).float()
    variants = {"unguided": _PairStep(model, None, None)}
    for guide in ("gradient", "lrp"):
        for k in (32, None):
            variants[f"{guide}, {k or B} guided pairs"] = _PairStep(model, None, guide, k)

    def step(module: _PairStep) -> float:
        t = time.perf_counter()
        logit, share, _, _ = module(batch)
        loss = F.binary_cross_entropy_with_logits(logit, label, reduction="sum")
        if share is not None:
            loss = loss + B * share
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    times: dict[str, list[float]] = {k: [] for k in variants}
    for name, module in variants.items():  # warm-up
        step(module)
    for _ in range(args.rounds):
        for name, module in variants.items():
            times[name].append(step(module))
    base = statistics.median(times["unguided"])
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
          f"small CNN, {S} px, batch {B}, median of {args.rounds} interleaved steps\n")
    print("| variant | step time (s) | pairs/s | ratio to unguided |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"| {name} | {t:.3f} | {B / t:.0f} | {t / base:.2f}× |")


if __name__ == "__main__":
    main()
