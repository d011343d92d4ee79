"""Where relevance leaks: the relevance sum after every step of the LRP pass, per pair (issue 28).

For each step of the canonized backbone (and, inside residual blocks and encoder blocks, each
branch, LayerNorm, attention product, softmax and residual sum) prints the median over pairs
of Σ R at that point / the share that should reach the images (−d for the logit, as
``PairExplanation.conservation``), and the step's own in/out ratio. A step that conserves
keeps the ratio; biases, ε and non-conservative rules (softmax) change it.

    .venv/bin/python benchmarks/relevance_trace.py RUN [--pairs 64] [--composite epsilon-plus-flat]
    .venv/bin/python benchmarks/relevance_trace.py --backbone vit-small [--config JSON]   # random weights

``RUN``: correctly predicted test pairs of a trained run; ``--backbone``: random weights, random images.
"""
from __future__ import annotations

import argparse
import json
from collections import OrderedDict

import numpy as np
import torch

from lrprec.explain.engine import LRPNet
from lrprec.explain.targets import head_seed, target_from_embeddings


def relevance_trace(model, x_a: torch.Tensor, x_b: torch.Tensor, relation: torch.Tensor, user: torch.Tensor,
                    composite: str, target: str = "logit") -> tuple["OrderedDict[str, np.ndarray]", np.ndarray]:
    """(step name -> per-pair Σ R at that step's output / share, and the input's), and the per-pair share."""
    B = x_a.shape[0]
    net = LRPNet(model.backbone, composite)
    x = torch.cat([x_a, x_b]).detach().requires_grad_(True)
    taps: list = []
    trace = net.forward(x, taps=taps)
    out, seed, a_i, a_j = head_seed(model, net, trace, relation, user, target, False)
    out.backward(seed.detach())
    with torch.no_grad():
        d = target_from_embeddings(model, a_i, a_j, relation, user, "distance")
        share = -d if target == "logit" else d
        rows: "OrderedDict[str, np.ndarray]" = OrderedDict()
        rel_in = x * x.grad if x.grad is not None else torch.zeros_like(x)
        for src in trace.sources:
            rel_in = rel_in + src * src.grad
        rows["input"] = _per_pair(rel_in, B) / share.numpy()
        for name, t in taps:
            if t.grad is None:
                continue
            while name in rows:  # a block's ReLU after the sum is named like the ReLU inside its branch
                name += "'"
            rows[name] = _per_pair(t * t.grad, B) / share.numpy()
        rows["head: E (its output R_k)"] = _per_pair(out * seed, B) / share.numpy()
    return rows, share.numpy()


def _per_pair(r: torch.Tensor, B: int) -> np.ndarray:
    """Σ R per pair of a (2B, ...) or (B, ...) tensor: both images' sums added."""
    s = r.flatten(1).sum(1).double().numpy()
    return s[:B] + s[B:] if s.shape[0] == 2 * B else s


def _inputs_from_run(path: str, pairs: int):
    from lrprec.run import Run, predict_logits

    run = Run.load(path)
    cat = run.catalog
    p = cat.pairs("test")
    logits = predict_logits(run.model, cat, p, input_size=run.input_size)
    idx = np.flatnonzero((logits > 0) == (p.label == 1))[:pairs]
    return (run.model, run.inputs(p.a[idx]), run.inputs(p.b[idx]), torch.from_numpy(p.relation[idx]),
            torch.from_numpy(p.user[idx]))


def _inputs_random(backbone: str, config: dict, pairs: int, size: int):
    from lrprec.model.backbones import build_backbone
    from lrprec.model.pair import PairModel

    torch.manual_seed(0)
    model = PairModel(build_backbone(backbone, **config), dim=10, n_relations=4, n_users=4, seed=0).eval()
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.randn(pairs, 3, size, size, generator=g), torch.randn(pairs, 3, size, size, generator=g)
    return model, xa, xb, torch.arange(pairs) % 4, torch.arange(pairs) % 5 - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--backbone")
    ap.add_argument("--config", default="{}")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--composite", default="epsilon-plus-flat")
    ap.add_argument("--target", default="logit")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.run:
        model, xa, xb, rel, user = _inputs_from_run(a.run, a.pairs)
    else:
        model, xa, xb, rel, user = _inputs_random(a.backbone, json.loads(a.config), a.pairs, a.size)
    rows, _ = relevance_trace(model, xa, xb, rel, user, a.composite, a.target)
    cons = rows["input"]
    print(f"{a.run or a.backbone}, {a.composite}, target {a.target}, {len(cons)} pairs: conservation median "
          f"{np.median(cons):.3f}, in [0.8, 1.25]: {100 * np.mean((cons >= 0.8) & (cons <= 1.25)):.0f}%\n")
    print("| step (output) | median Σ R / share | 5th pct | 95th pct |\n|---|---:|---:|---:|")
    for name, v in reversed(rows.items()):  # from the head down to the input, the order relevance flows
        print(f"| {name} | {np.median(v):.3f} | {np.percentile(v, 5):.3f} | {np.percentile(v, 95):.3f} |")


if __name__ == "__main__":
    main()
